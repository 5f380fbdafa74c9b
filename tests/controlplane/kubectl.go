package main

import (
	"os"

	"k8s.io/cli-runtime/pkg/genericiooptions"
	"k8s.io/component-base/cli"
	"k8s.io/component-base/logs"
	kubectl "k8s.io/kubectl/pkg/cmd"
	cmdutil "k8s.io/kubectl/pkg/cmd/util"
)

// runKubectl is `kubectl ARGS...`: k8s.io/kubectl's own command at the release
// the apiserver here runs, set up as cmd/kubectl's main does. It exists so the
// test scripts (validate-manifests.sh, build-images.sh, run-webhook-image.sh)
// never depend on a hand-installed kubectl: Debian's kubernetes-client is 1.20,
// far older than the manifests, and a missing kubectl must not turn real-apiserver
// checks into SKIPs. Unlike cmd/kubectl: no kubectl-* plugins from PATH and no
// client auth plugins (the kubeconfigs here hold client certificates).
func runKubectl(args []string) int {
	argv := append([]string{"kubectl"}, args...)
	_, _ = logs.GlogSetter(kubectl.GetLogVerbosity(argv))
	cmd := kubectl.NewKubectlCommand(kubectl.KubectlOptions{
		Arguments: argv, // for ~/.kube/kuberc, as kubectl reads it
		IOStreams: genericiooptions.IOStreams{In: os.Stdin, Out: os.Stdout, ErrOut: os.Stderr},
	})
	cmd.SetArgs(args) // cobra would take os.Args[1:], i.e. "kubectl ..."
	if err := cli.RunNoErrOutput(cmd); err != nil {
		cmdutil.CheckErr(err) // prints like kubectl and exits non-zero
	}
	return 0
}
