package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
)

// waitReady polls until /readyz is ok (and, with needDefaultSA, the
// serviceaccount controller has made default/default: pods are rejected by
// the ServiceAccount admission plugin before that). A component that exits
// while we wait is an error, as is the start timeout.
func waitReady(ctx context.Context, kubeconfig string, apiDone, kcmDone chan error, needDefaultSA bool) error {
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return err
	}
	cfg.Timeout = 5 * time.Second
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return err
	}
	deadline := time.After(startTimeout)
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	last := errors.New("not polled yet")
	for {
		select {
		case <-ctx.Done():
			return fmt.Errorf("interrupted while starting: %w", context.Cause(ctx))
		case err := <-apiDone:
			apiDone <- err
			return fmt.Errorf("kube-apiserver exited while starting: %v", err)
		case err := <-kcmDone:
			kcmDone <- err
			return fmt.Errorf("kube-controller-manager exited while starting: %v", err)
		case <-deadline:
			return fmt.Errorf("not ready after %s: %w", startTimeout, last)
		case <-tick.C:
		}
		body, err := client.CoreV1().RESTClient().Get().AbsPath("/readyz").DoRaw(ctx)
		if err != nil {
			last = fmt.Errorf("/readyz: %v: %s", err, body)
			continue
		}
		if !needDefaultSA {
			return nil
		}
		_, err = client.CoreV1().ServiceAccounts("default").Get(ctx, "default", metav1.GetOptions{})
		switch {
		case err == nil:
			return nil
		case apierrors.IsNotFound(err):
			last = errors.New("default ServiceAccount not created yet")
		default:
			last = err
		}
	}
}
