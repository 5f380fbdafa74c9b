package main

import (
	"bufio"
	"bytes"
	"fmt"
	"net/url"
	"os"
	"strings"

	"k8s.io/apiserver/pkg/util/webhook"
	aggregatorapiserver "k8s.io/kube-aggregator/pkg/apiserver"
)

// serviceMapResolver tells the apiserver where a Service (of a webhook with
// clientConfig.service) is. There is no kube-proxy here, and EndpointSlices may
// not hold the loopback addresses the tests' local processes listen on, so the
// tests write lines `NAMESPACE/NAME:PORT HOST:PORT` into a file instead; it is
// read on every call. The apiserver still verifies the webhook's certificate
// against NAME.NAMESPACE.svc, exactly as for an in-cluster Service.
type serviceMapResolver struct{ path string }

func (r serviceMapResolver) ResolveEndpoint(namespace, name string, port int32) (*url.URL, error) {
	key := fmt.Sprintf("%s/%s:%d", namespace, name, port)
	data, err := os.ReadFile(r.path)
	if err != nil && !os.IsNotExist(err) {
		return nil, err
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 2 && f[0] == key {
			return &url.URL{Scheme: "https", Host: f[1]}, nil
		}
	}
	return nil, fmt.Errorf("service %s has no local endpoint (add `%s HOST:PORT` to %s)", key, key, r.path)
}

// newServiceResolver resolves kubernetes.default.svc to the apiserver itself,
// like the stock resolver, and every other Service through the map file.
func newServiceResolver(mapFile, apiserverURL string) (webhook.ServiceResolver, error) {
	self, err := url.Parse(apiserverURL)
	if err != nil {
		return nil, err
	}
	return aggregatorapiserver.NewLoopbackServiceResolver(serviceMapResolver{path: mapFile}, self), nil
}
