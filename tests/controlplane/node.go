package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"

	"k8s.io/component-base/cli"
	_ "k8s.io/component-base/logs/json/register"          // --logging-format=json, as the upstream mains
	_ "k8s.io/component-base/metrics/prometheus/clientgo" // client metrics, as the upstream mains
	_ "k8s.io/component-base/metrics/prometheus/version"  // version metric, as the upstream mains
	proxyapp "k8s.io/kubernetes/cmd/kube-proxy/app"
	schedulerapp "k8s.io/kubernetes/cmd/kube-scheduler/app"
	kubeletapp "k8s.io/kubernetes/cmd/kubelet/app"
)

// Node mode (--node-ip, --node-name) makes the control plane ready for a real
// node, as scripts/cluster.sh runs it: the node components are the upstream
// commands, run as subcommands of this binary in processes of their own
// (`controlplane kubelet|kube-proxy|kube-scheduler ARGS...`), so each keeps its
// own signal handling, feature gates and flags exactly as upstream.

// runNodeCommand runs `controlplane NAME ARGS...` for a node component; ok is
// false if NAME is not one.
func runNodeCommand(name string, args []string) (code int, ok bool) {
	var cmd *cobra.Command
	switch name {
	case "kubelet":
		cmd = kubeletapp.NewKubeletCommand(context.Background())
	case "kube-proxy":
		cmd = proxyapp.NewProxyCommand()
	case "kube-scheduler":
		cmd = schedulerapp.NewSchedulerCommand()
	default:
		return 0, false
	}
	cmd.SetArgs(args) // cobra would take os.Args[1:], i.e. the subcommand name too
	return cli.Run(cmd), true
}

// nodeFiles are the credentials the node components read, all in DIR/node.
type nodeFiles struct {
	dir                   string
	caCert                string
	kubeletClientCert     string // the apiserver's client certificate towards kubelets
	kubeletClientKey      string
	kubeletKubeconfig     string
	proxyKubeconfig       string
	schedulerKubeconfig   string
	nodeName              string
	nodeIP                net.IP
	apiserverArgs         []string
	controllerManagerArgs []string
}

// prepareNode issues one client certificate per node component, with the
// identities the built-in RBAC bindings and the Node authorizer expect, and
// returns the apiserver and controller-manager flags of node mode.
func prepareNode(dir, server string, p *pki, nodeName string, nodeIP net.IP) (*nodeFiles, error) {
	n := &nodeFiles{
		dir:                 filepath.Join(dir, "node"),
		nodeName:            nodeName,
		nodeIP:              nodeIP,
		caCert:              filepath.Join(dir, "node", "ca.crt"),
		kubeletClientCert:   filepath.Join(dir, "node", "apiserver-kubelet-client.crt"),
		kubeletClientKey:    filepath.Join(dir, "node", "apiserver-kubelet-client.key"),
		kubeletKubeconfig:   filepath.Join(dir, "node", "kubelet.kubeconfig"),
		proxyKubeconfig:     filepath.Join(dir, "node", "kube-proxy.kubeconfig"),
		schedulerKubeconfig: filepath.Join(dir, "node", "kube-scheduler.kubeconfig"),
	}
	if err := os.MkdirAll(n.dir, 0o700); err != nil {
		return nil, err
	}
	if err := os.WriteFile(n.caCert, p.caPEM, 0o644); err != nil {
		return nil, err
	}
	// exec, logs and port-forward go apiserver -> kubelet; the kubelet asks the
	// apiserver (webhook authorization) whether this identity may: as an admin, yes.
	if _, _, err := p.clientCert("kube-apiserver-kubelet-client", []string{"system:masters"},
		n.kubeletClientCert, n.kubeletClientKey); err != nil {
		return nil, err
	}
	clients := []struct {
		path, cn string
		orgs     []string
	}{
		// The Node authorizer and NodeRestriction only accept this exact form.
		{n.kubeletKubeconfig, "system:node:" + nodeName, []string{"system:nodes"}},
		// Bound by the bootstrap ClusterRoleBindings system:node-proxier and system:kube-scheduler.
		{n.proxyKubeconfig, "system:kube-proxy", nil},
		{n.schedulerKubeconfig, "system:kube-scheduler", nil},
	}
	for _, c := range clients {
		base := c.path[:len(c.path)-len(".kubeconfig")]
		certPEM, keyPEM, err := p.clientCert(c.cn, c.orgs, base+".crt", base+".key")
		if err != nil {
			return nil, err
		}
		if err := writeClientKubeconfig(c.path, server, p.caPEM, certPEM, keyPEM); err != nil {
			return nil, fmt.Errorf("kubeconfig for %s: %w", c.cn, err)
		}
	}
	n.apiserverArgs = []string{
		"--advertise-address=" + nodeIP.String(),
		"--bind-address=" + nodeIP.String(),
		// Pods reach the apiserver through the `kubernetes` Service: its
		// endpoint is the node IP, which (unlike 127.0.0.1) an Endpoints may hold.
		"--endpoint-reconciler-type=lease",
		"--kubelet-client-certificate=" + n.kubeletClientCert,
		"--kubelet-client-key=" + n.kubeletClientKey,
		"--kubelet-preferred-address-types=InternalIP",
	}
	// Every default controller: deployments, replica sets, endpoint slices, node
	// lifecycle (it lifts the not-ready taint) and the rest a real cluster runs.
	n.controllerManagerArgs = []string{"--controllers=*"}
	return n, nil
}
