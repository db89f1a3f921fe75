package main

import (
	"context"
	"fmt"
	"net"
	"sort"
	"sync"
	"time"

	controllerpkg "github.com/cert-manager/cert-manager/pkg/controller"
	logf "github.com/cert-manager/cert-manager/pkg/logs"

	// Each package registers its controller(s) in controllerpkg.Known() from init().
	"github.com/cert-manager/cert-manager/pkg/controller/certificaterequests/approver"
	crca "github.com/cert-manager/cert-manager/pkg/controller/certificaterequests/ca"
	crselfsigned "github.com/cert-manager/cert-manager/pkg/controller/certificaterequests/selfsigned"
	"github.com/cert-manager/cert-manager/pkg/controller/certificates/issuing"
	"github.com/cert-manager/cert-manager/pkg/controller/certificates/keymanager"
	"github.com/cert-manager/cert-manager/pkg/controller/certificates/readiness"
	"github.com/cert-manager/cert-manager/pkg/controller/certificates/requestmanager"
	"github.com/cert-manager/cert-manager/pkg/controller/certificates/revisionmanager"
	"github.com/cert-manager/cert-manager/pkg/controller/certificates/trigger"
	"github.com/cert-manager/cert-manager/pkg/controller/clusterissuers"
	"github.com/cert-manager/cert-manager/pkg/controller/issuers"

	// The issuer types the Issuer/ClusterIssuer controllers can set up (register in init()).
	_ "github.com/cert-manager/cert-manager/pkg/issuer/ca"
	_ "github.com/cert-manager/cert-manager/pkg/issuer/selfsigned"
)

// The controllers this local cert-manager runs: everything a Certificate from a SelfSigned
// or CA issuer needs, and nothing for ACME, Vault, Venafi, Ingress or Gateway shims.
var enabledControllers = []string{
	trigger.ControllerName,
	keymanager.ControllerName,
	requestmanager.ControllerName,
	readiness.ControllerName,
	issuing.ControllerName,
	revisionmanager.ControllerName,
	issuers.ControllerName,
	clusterissuers.ControllerName,
	approver.ControllerName,
	crselfsigned.CRControllerName,
	crca.CRControllerName,
}

const workersPerController = 5

func runController(ctx context.Context, o options) error {
	ctx = logf.NewContext(ctx, logf.Log, "controller")
	log := logf.FromContext(ctx)

	factory, err := controllerpkg.NewContextFactory(ctx, controllerpkg.ContextOptions{
		Kubeconfig:         o.kubeconfig,
		KubernetesAPIQPS:   20,
		KubernetesAPIBurst: 50,
		IssuerOptions: controllerpkg.IssuerOptions{
			ClusterResourceNamespace: o.clusterNS,
		},
		CertificateOptions: controllerpkg.CertificateOptions{
			// cert-manager's own defaults (its controller flags).
			CertificateRequestMinimumBackoffDuration: time.Hour,
			CertificateRequestMaximumBackoffDuration: 32 * time.Hour,
		},
	})
	if err != nil {
		return fmt.Errorf("building the controller context: %w", err)
	}
	// One Context shares the informer factories every controller registered its informers
	// with; they are started after all controllers are built.
	shared, err := factory.Build("cert-manager-controller")
	if err != nil {
		return err
	}

	var metricsErr chan error
	if o.metricsAddress != "" {
		ln, err := net.Listen("tcp", o.metricsAddress)
		if err != nil {
			return fmt.Errorf("metrics listener on %s: %w", o.metricsAddress, err)
		}
		srv := shared.Metrics.NewServer(ln)
		metricsErr = make(chan error, 1)
		go func() { metricsErr <- srv.Serve(ln) }()
		go func() { <-ctx.Done(); _ = srv.Close() }()
	}

	known := controllerpkg.Known()
	names := append([]string(nil), enabledControllers...)
	sort.Strings(names)
	var wg sync.WaitGroup
	errs := make(chan error, len(names))
	for _, name := range names {
		construct, ok := known[name]
		if !ok {
			return fmt.Errorf("controller %q is not registered by the linked cert-manager packages", name)
		}
		iface, err := construct(factory)
		if err != nil {
			return fmt.Errorf("building controller %q: %w", name, err)
		}
		wg.Add(1)
		go func(name string, c controllerpkg.Interface) {
			defer wg.Done()
			log.Info("starting controller", "controller", name)
			if err := c.Run(workersPerController, ctx); err != nil {
				errs <- fmt.Errorf("controller %q: %w", name, err)
			}
		}(name, iface)
	}
	shared.SharedInformerFactory.Start(ctx.Done())
	shared.KubeSharedInformerFactory.Start(ctx.Done())
	log.Info("controllers started", "controllers", names)

	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case err := <-errs:
		return err
	case err := <-metricsErr:
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("metrics listener: %w", err)
	case <-done:
		if ctx.Err() == nil {
			return fmt.Errorf("all controllers returned")
		}
		return nil
	}
}
