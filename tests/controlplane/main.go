// Command controlplane runs a real Kubernetes control plane in one process for
// the end-to-end tests: embedded etcd, kube-apiserver and kube-controller-manager
// (garbage collector, namespace and service-account controllers), all from the
// upstream Go packages of one pinned release. No kubelet, no scheduler: pods are
// stored, validated, mutated by admission webhooks and garbage-collected, but
// never run.
//
// It prints exactly one line on stdout, `READY kubeconfig=PATH`, once /readyz
// is ok and the default ServiceAccount exists; everything else goes to stderr.
// SIGTERM/SIGINT (or EOF on stdin with --watch-stdin) stops the components in
// order and removes every file it made.
//
// `controlplane kustomize DIR` renders a kustomization instead (kustomize.go);
// `controlplane kubectl ARGS...` is kubectl of the same release (kubectl.go).
//
// With --node-ip and --node-name it is the control plane of a real node
// (node.go, scripts/cluster.sh): it serves on the node IP, runs every default
// controller and writes kubeconfigs for `controlplane kubelet|kube-proxy|
// kube-scheduler`, the upstream node components as subcommands.
//
// Admission webhooks with clientConfig.service are sent to the address that
// DIR/service-endpoints maps the Service to (see resolver.go).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"k8s.io/klog/v2"
	apiserverapp "k8s.io/kubernetes/cmd/kube-apiserver/app"
)

const (
	serviceCIDR = "10.96.0.0/16"
	// First address of serviceCIDR: the `kubernetes` Service, also a serving-cert SAN.
	serviceIP = "10.96.0.1"
	issuer    = "https://kubernetes.default.svc.cluster.local"
	// Controllers the tests rely on. root-ca-cert-publisher provides the
	// kube-root-ca.crt ConfigMap that projected service-account volumes name.
	controllers = "garbage-collector-controller,namespace-controller,serviceaccount-controller," +
		"serviceaccount-token-controller,root-ca-certificate-publisher-controller"
	startTimeout = 3 * time.Minute
	stopTimeout  = 20 * time.Second
)

type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, " ") }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }

type options struct {
	dir           string
	kubeconfigOut string
	watchStdin    bool
	verbosity     int
	apiserverArgs multiFlag
	kcmArgs       multiFlag
	listen        string
	nodeIP        string
	nodeName      string
}

func main() {
	if len(os.Args) > 1 && os.Args[1] == "kustomize" {
		os.Exit(runKustomize(os.Args[2:]))
	}
	if len(os.Args) > 1 && os.Args[1] == "kubectl" {
		os.Exit(runKubectl(os.Args[2:]))
	}
	if len(os.Args) > 1 {
		if code, ok := runNodeCommand(os.Args[1], os.Args[2:]); ok {
			os.Exit(code)
		}
	}
	var o options
	// A flag set of our own: the kubelet's packages (cadvisor) register dozens of
	// flags on flag.CommandLine that mean nothing here.
	fs := flag.NewFlagSet("controlplane", flag.ExitOnError)
	fs.StringVar(&o.dir, "dir", envOr("CONTROLPLANE_DIR", ""), "state dir (default: a new temp dir); env CONTROLPLANE_DIR")
	fs.StringVar(&o.kubeconfigOut, "kubeconfig-out", envOr("CONTROLPLANE_KUBECONFIG_OUT", ""),
		"where to write the admin kubeconfig (default: DIR/admin.kubeconfig); env CONTROLPLANE_KUBECONFIG_OUT")
	fs.BoolVar(&o.watchStdin, "watch-stdin", os.Getenv("CONTROLPLANE_WATCH_STDIN") == "1",
		"stop when stdin reaches EOF, so the control plane dies with the process that piped it; env CONTROLPLANE_WATCH_STDIN=1")
	fs.IntVar(&o.verbosity, "v", 0, "klog verbosity of the components")
	fs.Var(&o.apiserverArgs, "apiserver-arg", "extra kube-apiserver flag, e.g. --apiserver-arg=--audit-log-path=- (repeatable)")
	fs.Var(&o.kcmArgs, "controller-manager-arg", "extra kube-controller-manager flag (repeatable)")
	fs.StringVar(&o.listen, "listen", envOr("CONTROLPLANE_LISTEN", "127.0.0.1:0"),
		"kube-apiserver address; env CONTROLPLANE_LISTEN")
	fs.StringVar(&o.nodeIP, "node-ip", envOr("CONTROLPLANE_NODE_IP", ""),
		"node mode: the node's IP (a local, non-loopback address; the apiserver advertises it); env CONTROLPLANE_NODE_IP")
	fs.StringVar(&o.nodeName, "node-name", envOr("CONTROLPLANE_NODE_NAME", ""),
		"node mode: the node's name, for the kubelet's identity; env CONTROLPLANE_NODE_NAME")
	_ = fs.Parse(os.Args[1:]) // ExitOnError: never returns an error

	code := run(o)
	klog.Flush()
	os.Exit(code)
}

func envOr(key, def string) string {
	if v, ok := os.LookupEnv(key); ok && v != "" {
		return v
	}
	return def
}

// run returns the process exit code; every path through it cleans up.
func run(o options) int {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	// The parent may be gone (that is what --watch-stdin is for) and take the read
	// end of our stderr with it: without this, the first log line of the shutdown
	// kills us with SIGPIPE before the cleanup ran.
	signal.Ignore(syscall.SIGPIPE)
	if o.watchStdin {
		ctx = stopOnStdinEOF(ctx)
	}

	var cleanup cleanupList
	defer cleanup.run()

	var nodeIP net.IP
	if o.nodeIP != "" || o.nodeName != "" {
		if nodeIP = net.ParseIP(o.nodeIP); nodeIP == nil || nodeIP.IsLoopback() || o.nodeName == "" {
			return fail("node mode", fmt.Errorf("needs --node-ip (a non-loopback IP, got %q) and --node-name (got %q)",
				o.nodeIP, o.nodeName))
		}
	}

	dir, err := prepareDir(o.dir, &cleanup)
	if err != nil {
		return fail("state dir", err)
	}
	kubeconfig := o.kubeconfigOut
	if kubeconfig == "" {
		kubeconfig = filepath.Join(dir, "admin.kubeconfig")
	}
	if kubeconfig, err = filepath.Abs(kubeconfig); err != nil {
		return fail("kubeconfig path", err)
	}
	// The kubeconfig points at a server that is gone once we exit; a parent dir
	// made for it goes too (os.Remove leaves it if something else is in it).
	var made []string
	for d := filepath.Dir(kubeconfig); ; d = filepath.Dir(d) {
		if _, err := os.Stat(d); !errors.Is(err, os.ErrNotExist) {
			break
		}
		made = append(made, d)
	}
	// Cleanups run in reverse: register the outermost first so it goes last.
	for i := len(made) - 1; i >= 0; i-- {
		dir := made[i]
		cleanup.add(func() { _ = os.Remove(dir) })
	}
	cleanup.add(func() { _ = os.Remove(kubeconfig) })

	var extraIPs []net.IP
	if nodeIP != nil {
		extraIPs = append(extraIPs, nodeIP)
	}
	p, err := newPKI(filepath.Join(dir, "pki"), extraIPs...)
	if err != nil {
		return fail("pki", err)
	}

	etcd, etcdURL, err := startEtcd(dir)
	if err != nil {
		return fail("etcd", err)
	}
	// Closing etcd can hang if a client is stuck; never let it block the exit.
	cleanup.add(func() { withTimeout(stopTimeout, etcd.Close) })

	ln, err := net.Listen("tcp", o.listen)
	if err != nil {
		return fail("listen", err)
	}
	server := "https://" + ln.Addr().String()
	if err := writeKubeconfig(kubeconfig, server, p); err != nil {
		return fail("kubeconfig", err)
	}
	klog.InfoS("starting kube-apiserver", "server", server, "etcd", etcdURL, "dir", dir)

	var node *nodeFiles
	if nodeIP != nil {
		if node, err = prepareNode(dir, server, p, o.nodeName, nodeIP); err != nil {
			return fail("node credentials", err)
		}
	}

	verbosity := fmt.Sprintf("--v=%d", o.verbosity)
	apiArgs := []string{
		"--etcd-servers=" + etcdURL,
		"--bind-address=127.0.0.1",
		"--advertise-address=127.0.0.1",
		"--cert-dir=" + filepath.Join(dir, "apiserver-certs"),
		"--tls-cert-file=" + p.servingCert,
		"--tls-private-key-file=" + p.servKey,
		"--client-ca-file=" + p.caCert,
		"--service-account-issuer=" + issuer,
		"--service-account-key-file=" + p.saPub,
		"--service-account-signing-key-file=" + p.saKey,
		"--service-cluster-ip-range=" + serviceCIDR,
		"--authorization-mode=Node,RBAC",
		// Defaults (incl. MutatingAdmissionWebhook, ServiceAccount) plus what kubeadm adds.
		"--enable-admission-plugins=NodeRestriction",
		"--allow-privileged=true",
		// 127.0.0.1 is not a valid Endpoints address; nothing here needs the kubernetes Service endpoints.
		"--endpoint-reconciler-type=none",
		"--profiling=false",
		verbosity,
	}
	if node != nil {
		apiArgs = append(apiArgs, node.apiserverArgs...)
	}
	// Last: the caller's own flags win.
	apiArgs = append(apiArgs, o.apiserverArgs...)

	// Webhooks named by clientConfig.service reach local processes through this
	// file. A real node has kube-proxy: there the stock resolver (ClusterIP) is right.
	serviceMap := filepath.Join(dir, "service-endpoints")
	if node == nil {
		resolver, err := newServiceResolver(serviceMap, server)
		if err != nil {
			return fail("service resolver", err)
		}
		apiserverapp.SetServiceResolverForTests(resolver)
	}

	apiCtx, apiCancel := context.WithCancel(context.Background())
	apiDone := make(chan error, 1)
	go func() { apiDone <- runAPIServer(apiCtx, ln, apiArgs) }()
	cleanup.add(func() { stopComponent("kube-apiserver", apiCancel, apiDone) })

	if err := waitReady(ctx, kubeconfig, apiDone, nil, false); err != nil {
		return fail("kube-apiserver", err)
	}

	kcmArgs := []string{
		"--kubeconfig=" + kubeconfig,
		"--controllers=" + controllers,
		"--service-account-private-key-file=" + p.saKey,
		"--root-ca-file=" + p.caCert,
		"--use-service-account-credentials=false",
		"--leader-elect=false",
		"--bind-address=127.0.0.1",
		"--secure-port=0",
		verbosity,
	}
	if node != nil {
		kcmArgs = append(kcmArgs, node.controllerManagerArgs...)
	}
	kcmArgs = append(kcmArgs, o.kcmArgs...)
	kcmCtx, kcmCancel := context.WithCancel(context.Background())
	kcmDone := make(chan error, 1)
	go func() { kcmDone <- runControllerManager(kcmCtx, kcmArgs) }()
	// Registered last, so it stops first: controllers before the apiserver before etcd.
	cleanup.add(func() { stopComponent("kube-controller-manager", kcmCancel, kcmDone) })

	if err := waitReady(ctx, kubeconfig, apiDone, kcmDone, true); err != nil {
		return fail("control plane", err)
	}

	fmt.Printf("READY kubeconfig=%s\n", kubeconfig)
	klog.InfoS("control plane ready", "kubeconfig", kubeconfig, "server", server, "serviceMap", serviceMap)

	select {
	case <-ctx.Done():
		klog.InfoS("stopping control plane", "reason", context.Cause(ctx))
		return 0
	case err := <-apiDone:
		apiDone <- err // let the cleanup see it too
		return fail("kube-apiserver exited", err)
	case err := <-kcmDone:
		kcmDone <- err
		return fail("kube-controller-manager exited", err)
	}
}

func fail(what string, err error) int {
	if err == nil {
		err = errors.New("stopped without an error")
	}
	klog.ErrorS(err, "controlplane failed", "step", what)
	fmt.Fprintf(os.Stderr, "controlplane: %s: %v\n", what, err)
	return 1
}

// prepareDir creates the state dir. A dir we created is removed as a whole;
// in a dir that already existed only our own entries are removed.
func prepareDir(dir string, cleanup *cleanupList) (string, error) {
	if dir == "" {
		d, err := os.MkdirTemp("", "session-ssh-controlplane-")
		if err != nil {
			return "", err
		}
		cleanup.add(func() { _ = os.RemoveAll(d) })
		return d, nil
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "", err
	}
	if _, err := os.Stat(abs); errors.Is(err, os.ErrNotExist) {
		if err := os.MkdirAll(abs, 0o700); err != nil {
			return "", err
		}
		cleanup.add(func() { _ = os.RemoveAll(abs) })
		return abs, nil
	}
	cleanup.add(func() {
		for _, pattern := range []string{"pki", "etcd-*", "apiserver-certs", "service-endpoints*", "node"} {
			matches, _ := filepath.Glob(filepath.Join(abs, pattern))
			for _, m := range matches {
				_ = os.RemoveAll(m)
			}
		}
	})
	return abs, nil
}

// stopComponent cancels a component and waits a bounded time for it to return.
func stopComponent(name string, cancel context.CancelFunc, done chan error) {
	cancel()
	select {
	case err := <-done:
		if err != nil && !errors.Is(err, context.Canceled) {
			klog.InfoS("component stopped", "component", name, "err", err)
		}
	case <-time.After(stopTimeout):
		klog.InfoS("component did not stop in time, leaving it to process exit", "component", name)
	}
}

func withTimeout(d time.Duration, f func()) {
	done := make(chan struct{})
	go func() { f(); close(done) }()
	select {
	case <-done:
	case <-time.After(d):
	}
}

// stopOnStdinEOF cancels the returned context when stdin closes: a parent
// that dies without signalling us (a crashed test binary) still stops us.
func stopOnStdinEOF(parent context.Context) context.Context {
	ctx, cancel := context.WithCancelCause(parent)
	go func() {
		_, _ = io.Copy(io.Discard, os.Stdin)
		cancel(errors.New("stdin closed"))
	}()
	return ctx
}

// cleanupList runs its functions in reverse order of registration.
type cleanupList struct{ fns []func() }

func (c *cleanupList) add(f func()) { c.fns = append(c.fns, f) }

func (c *cleanupList) run() {
	for i := len(c.fns) - 1; i >= 0; i-- {
		c.fns[i]()
	}
	c.fns = nil
}
