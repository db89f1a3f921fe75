//! The builtin queries of each observer, as Prometheus receives them.

use super::*;

/// The mesh's view of the canary Deployment `web` in `shop`.
pub(crate) const LINKERD: Observer<'static> = Observer::Linkerd {
    namespace: "shop",
    deployment: "web",
};

/// ingress-nginx's view of the canary's requests through the Ingress `public` in `shop`.
pub(crate) const NGINX: Observer<'static> = Observer::Nginx {
    namespace: "shop",
    ingress: "public",
};

#[test]
fn builtin_success_rate_query_is_the_one_spec_metrics_spells() {
    assert_eq!(
        Builtin::SuccessRate.query("shop", "web", Duration::from_secs(60)),
        "sum(rate(response_total{namespace=\"shop\",deployment=~\"web\",classification!=\"failure\",direction=\"inbound\"}[1m])) \
         / sum(rate(response_total{namespace=\"shop\",deployment=~\"web\",direction=\"inbound\"}[1m])) * 100"
    );
}

#[test]
fn builtin_latency_query_is_the_one_spec_metrics_spells() {
    assert_eq!(
        Builtin::Duration.query("shop", "web", Duration::from_secs(60)),
        "histogram_quantile(0.99, sum(rate(response_latency_ms_bucket{namespace=\"shop\",deployment=~\"web\",direction=\"inbound\"}[1m])) by (le))"
    );
}

#[test]
fn names_with_dots_match_only_themselves_in_every_builtin_query() {
    // `good.primary` as a bare regex also matches `good-primary`, another Deployment.
    let window = Duration::from_secs(60);
    let linkerd = Observer::Linkerd {
        namespace: "shop",
        deployment: "good.primary",
    };
    let nginx = Observer::Nginx {
        namespace: "shop",
        ingress: "public.v2",
    };
    let gloo_any_port = Observer::Gloo {
        namespace: "shop",
        service: "web",
        port: None,
    };
    for builtin in Builtin::ALL {
        let query = builtin.query_for(&linkerd, window);
        assert!(
            query.contains("deployment=~\"good\\\\.primary\""),
            "{query}"
        );
        assert!(!query.contains("good.primary"), "{query}");
        let query = builtin.query_for(&nginx, window);
        assert!(query.contains("ingress=\"public.v2\""), "{query}");
        assert!(!query.contains("ingress=~"), "{query}");
        let query = builtin.query_for(&gloo_any_port, window);
        assert!(
            query.contains("envoy_cluster_name=~\"shop-web-canaryupstream-[0-9]+_shop\""),
            "{query}"
        );
    }
}

#[test]
fn nginx_success_rate_counts_the_canary_upstreams_non_5xx_requests_of_the_users_ingress() {
    assert_eq!(
        Builtin::SuccessRate.query_for(&NGINX, Duration::from_secs(60)),
        "sum(rate(nginx_ingress_controller_requests{namespace=\"shop\",ingress=\"public\",canary!=\"\",status!~\"5.*\"}[1m])) \
         / sum(rate(nginx_ingress_controller_requests{namespace=\"shop\",ingress=\"public\",canary!=\"\"}[1m])) * 100"
    );
}

#[test]
fn nginx_latency_is_the_p99_of_the_canary_upstreams_request_duration_in_milliseconds() {
    assert_eq!(
        Builtin::Duration.query_for(&NGINX, Duration::from_secs(60)),
        "histogram_quantile(0.99, sum(rate(nginx_ingress_controller_request_duration_seconds_bucket{namespace=\"shop\",ingress=\"public\",canary!=\"\"}[1m])) by (le)) * 1000"
    );
}

/// Gloo's Envoy view of the requests sent to the canary's Upstream of `web-svc` in `shop`.
pub(crate) const GLOO: Observer<'static> = Observer::Gloo {
    namespace: "shop",
    service: "web-svc",
    port: Some(8080),
};

#[test]
fn gloo_success_rate_counts_the_non_5xx_requests_of_the_canary_upstreams_envoy_cluster() {
    assert_eq!(
        Builtin::SuccessRate.query_for(&GLOO, Duration::from_secs(60)),
        "sum(rate(envoy_cluster_upstream_rq{envoy_cluster_name=\"shop-web-svc-canaryupstream-8080_shop\",envoy_response_code!~\"5.*\"}[1m])) \
         / sum(rate(envoy_cluster_upstream_rq{envoy_cluster_name=\"shop-web-svc-canaryupstream-8080_shop\"}[1m])) * 100"
    );
}

#[test]
fn gloo_latency_is_the_p99_of_the_canary_upstreams_envoy_request_time_in_milliseconds() {
    assert_eq!(
        Builtin::Duration.query_for(&GLOO, Duration::from_secs(60)),
        "histogram_quantile(0.99, sum(rate(envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name=\"shop-web-svc-canaryupstream-8080_shop\"}[1m])) by (le))"
    );
    // Without a known port, the canary's Upstream on any port.
    let any_port = Observer::Gloo {
        namespace: "shop",
        service: "web-svc",
        port: None,
    };
    assert_eq!(
        Builtin::Duration.query_for(&any_port, Duration::from_secs(60)),
        "histogram_quantile(0.99, sum(rate(envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name=~\"shop-web-svc-canaryupstream-[0-9]+_shop\"}[1m])) by (le))"
    );
}

/// Traefik's view of the requests sent to the HTTPRoute's canary backend of `web-svc` in
/// `shop`, on port 8080.
pub(crate) const TRAEFIK: Observer<'static> = Observer::Traefik {
    namespace: "shop",
    service: "web-svc",
    port: Some(8080),
};

#[test]
fn traefik_success_rate_counts_the_non_5xx_requests_of_the_canary_backends_service() {
    assert_eq!(
        Builtin::SuccessRate.query_for(&TRAEFIK, Duration::from_secs(60)),
        "sum(rate(traefik_service_requests_total{service=\"shop-web-svc-canary-http-8080@kubernetesgateway\",code!~\"5.*\"}[1m])) \
         / sum(rate(traefik_service_requests_total{service=\"shop-web-svc-canary-http-8080@kubernetesgateway\"}[1m])) * 100"
    );
}

#[test]
fn traefik_latency_is_the_p99_of_the_canary_backends_request_duration_in_milliseconds() {
    assert_eq!(
        Builtin::Duration.query_for(&TRAEFIK, Duration::from_secs(60)),
        "histogram_quantile(0.99, sum(rate(traefik_service_request_duration_seconds_bucket{service=\"shop-web-svc-canary-http-8080@kubernetesgateway\"}[1m])) by (le)) * 1000"
    );
}

#[test]
fn traefik_names_the_backend_as_its_gateway_provider_normalizes_it() {
    // Traefik turns every run of other characters into one `-`: a namespace with `--` in it
    // is spelled with one in the service label.
    let observer = Observer::Traefik {
        namespace: "team--a",
        service: "web",
        port: Some(9898),
    };
    let query = Builtin::SuccessRate.query_for(&observer, Duration::from_secs(60));
    assert!(
        query.contains("service=\"team-a-web-canary-http-9898@kubernetesgateway\""),
        "{query}"
    );
    // Without a known port, the canary backend on any port, the rest matched literally.
    let any_port = Observer::Traefik {
        namespace: "shop",
        service: "web-svc",
        port: None,
    };
    assert_eq!(
        Builtin::Duration.query_for(&any_port, Duration::from_secs(60)),
        "histogram_quantile(0.99, sum(rate(traefik_service_request_duration_seconds_bucket{service=~\"shop-web-svc-canary-http-[0-9]+@kubernetesgateway\"}[1m])) by (le)) * 1000"
    );
}

#[test]
fn builtin_queries_write_the_window_as_a_prometheus_duration() {
    for (window, text) in [
        (Duration::from_secs(5), "[5s]"),
        (Duration::from_secs(90), "[1m30s]"),
        (Duration::from_millis(1_500), "[1s500ms]"),
        (Duration::from_secs(3_600), "[1h]"),
    ] {
        for builtin in Builtin::ALL {
            for observer in [LINKERD, NGINX, GLOO, TRAEFIK] {
                let query = builtin.query_for(&observer, window);
                assert!(query.contains(text), "{query} should contain {text}");
            }
        }
    }
}

#[test]
fn request_counts_select_the_ratios_series_since_the_move_and_the_primarys_apart() {
    let observers = [
        Observer::Linkerd {
            namespace: "shop",
            deployment: "web",
        },
        Observer::Nginx {
            namespace: "shop",
            ingress: "web",
        },
        Observer::Gloo {
            namespace: "shop",
            service: "web",
            port: Some(9898),
        },
        Observer::Traefik {
            namespace: "shop",
            service: "web",
            port: Some(9898),
        },
    ];
    for observer in observers {
        let ratio = Builtin::SuccessRate.query_for(&observer, Duration::from_secs(60));
        let all = observer.request_count(Side::Canary, false, 30);
        let failed = observer.request_count(Side::Canary, true, 30);
        let primary = observer.request_count(Side::Primary, false, 30);
        for query in [&all, &failed, &primary] {
            assert!(
                query.starts_with("sum(increase(") && query.ends_with("[30s]))"),
                "{query}"
            );
        }
        // The canary's counts read the denominator's series of the ratio, over the seconds
        // since the move instead of the window.
        let denominator = ratio.split(" / ").nth(1).unwrap_or_default();
        let series = denominator
            .trim_start_matches("sum(rate(")
            .split('[')
            .next()
            .unwrap_or_default();
        assert!(all.contains(series), "{all} does not read {series}");
        // Failed requests add a matcher; the primary's are other series.
        assert!(failed.len() > all.len(), "{failed}");
        assert!(
            failed.contains("classification=\"failure\"") || failed.contains("=~\"5.*\""),
            "{failed}"
        );
        assert_ne!(primary, all);
        assert!(
            !primary.contains(series),
            "{primary} reads the canary's {series}"
        );
    }
    // A zero-second range is never asked.
    let linkerd = observers[0];
    assert!(
        linkerd
            .request_count(Side::Canary, false, 0)
            .contains("[1s]")
    );
}

#[test]
fn latency_buckets_read_the_p99s_histogram_by_le_since_the_move_in_its_unit() {
    let observers = [
        Observer::Linkerd {
            namespace: "shop",
            deployment: "web",
        },
        Observer::Nginx {
            namespace: "shop",
            ingress: "web",
        },
        Observer::Gloo {
            namespace: "shop",
            service: "web",
            port: Some(9898),
        },
        Observer::Traefik {
            namespace: "shop",
            service: "web",
            port: Some(9898),
        },
    ];
    for observer in observers {
        let p99 = Builtin::Duration.query_for(&observer, Duration::from_secs(60));
        let buckets = observer.latency_buckets(30);
        assert!(
            buckets.query.starts_with("sum by (le) (increase(")
                && buckets.query.ends_with("[30s]))"),
            "{}",
            buckets.query
        );
        // The same series as the p99, over the seconds since the move instead of the window.
        let series = p99
            .split("sum(rate(")
            .nth(1)
            .and_then(|rest| rest.split('[').next())
            .unwrap_or_default();
        assert!(series.contains("_bucket{"), "{p99}");
        assert!(
            buckets.query.contains(series),
            "{} does not read {series}",
            buckets.query
        );
        // Seconds where the p99 is scaled to milliseconds, milliseconds elsewhere.
        let in_seconds = p99.ends_with("* 1000");
        assert_eq!(
            buckets.unit_ms,
            if in_seconds { 1000.0 } else { 1.0 },
            "{p99}"
        );
    }
    assert!(observers[0].latency_buckets(0).query.contains("[1s]"));
}
