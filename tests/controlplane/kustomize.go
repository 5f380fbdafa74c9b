package main

import (
	"fmt"
	"os"

	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
)

// runKustomize renders a kustomization like `kubectl kustomize DIR` (the same
// kustomize release kubectl of this Kubernetes version embeds), so the tests
// need no kubectl: Debian's kubernetes-client is far older than the manifests.
func runKustomize(args []string) int {
	if len(args) != 1 {
		fmt.Fprintln(os.Stderr, "usage: controlplane kustomize DIR")
		return 2
	}
	opts := krusty.MakeDefaultOptions()
	// kubectl's order: Namespaces, RBAC, ... before what lives in them.
	opts.Reorder = krusty.ReorderOptionLegacy
	k := krusty.MakeKustomizer(opts)
	m, err := k.Run(filesys.MakeFsOnDisk(), args[0])
	if err != nil {
		fmt.Fprintf(os.Stderr, "kustomize %s: %v\n", args[0], err)
		return 1
	}
	out, err := m.AsYaml()
	if err != nil {
		fmt.Fprintf(os.Stderr, "kustomize %s: %v\n", args[0], err)
		return 1
	}
	if _, err := os.Stdout.Write(out); err != nil {
		return 1
	}
	return 0
}
