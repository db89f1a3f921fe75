// Command cert-manager is the local environment's cert-manager: the upstream library
// (github.com/cert-manager/cert-manager, pinned in hack/versions.env) behind a small main of
// our own, because the module proxy does not serve cert-manager's binary modules
// (cmd/controller, cmd/cainjector are separate modules). Built by `hack/deps.sh cert-manager`,
// run on the host by hack/cert-manager.sh against the admin kubeconfig.
//
//	cert-manager controller --kubeconfig FILE [--metrics-address 127.0.0.1:PORT]
//	cert-manager cainjector --kubeconfig FILE [--metrics-address 127.0.0.1:PORT]
//
// controller runs the Certificate controllers, the Issuer and ClusterIssuer controllers, the
// CertificateRequest approver and the CertificateRequest signers of the SelfSigned and CA
// issuer types; cainjector copies a Certificate's CA into the ValidatingWebhookConfigurations,
// MutatingWebhookConfigurations and CustomResourceDefinitions annotated
// cert-manager.io/inject-ca-from. Neither elects a leader (one process each); metrics listen
// on loopback only, or not at all without --metrics-address.
package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"syscall"
)

func usage() {
	fmt.Fprintf(os.Stderr, "usage: %s controller|cainjector --kubeconfig FILE [--metrics-address 127.0.0.1:PORT]\n", os.Args[0])
	os.Exit(2)
}

type options struct {
	kubeconfig     string
	metricsAddress string
	clusterNS      string
}

func parse(name string, args []string) options {
	var o options
	fs := flag.NewFlagSet(name, flag.ExitOnError)
	fs.StringVar(&o.kubeconfig, "kubeconfig", "", "kubeconfig of the cluster (required)")
	fs.StringVar(&o.metricsAddress, "metrics-address", "", "loopback address:port for /metrics; empty: no metrics listener")
	fs.StringVar(&o.clusterNS, "cluster-resource-namespace", "cert-manager", "namespace of the Secrets that ClusterIssuers read")
	_ = fs.Parse(args)
	if o.kubeconfig == "" {
		fmt.Fprintln(os.Stderr, "--kubeconfig is required: the admin kubeconfig of the cluster (.serin/cluster/kubeconfig)")
		os.Exit(2)
	}
	if o.metricsAddress != "" {
		host, _, err := net.SplitHostPort(o.metricsAddress)
		if ip := net.ParseIP(host); err != nil || ip == nil || !ip.IsLoopback() {
			fmt.Fprintf(os.Stderr, "--metrics-address %q: must be a loopback address and port (127.0.0.1:PORT), or empty\n", o.metricsAddress)
			os.Exit(2)
		}
	}
	return o
}

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var err error
	switch os.Args[1] {
	case "controller":
		err = runController(ctx, parse("controller", os.Args[2:]))
	case "cainjector":
		err = runCAInjector(ctx, parse("cainjector", os.Args[2:]))
	default:
		usage()
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "cert-manager %s: %v\n", os.Args[1], err)
		os.Exit(1)
	}
}
