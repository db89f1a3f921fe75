//! NGINX (ingress-nginx), the router of the `nginx` provider: a canary Ingress
//! (`networking.k8s.io/v1`) beside the user's own, as ingress-nginx splits traffic.
//!
//! ```yaml
//! metadata:
//!   name: web-canary                  # <serin.dev/ingress>-canary
//!   annotations:
//!     nginx.ingress.kubernetes.io/canary: "true"
//!     nginx.ingress.kubernetes.io/canary-weight: "20"
//!     # A/B only, while the canary gets traffic (canary-weight is then "0"):
//!     nginx.ingress.kubernetes.io/canary-by-header: x-canary
//!     nginx.ingress.kubernetes.io/canary-by-header-value: insider   # or -pattern: REGEX
//!     nginx.ingress.kubernetes.io/canary-by-cookie: canary
//! spec:                               # the user's Ingress rules, for the apex Service only,
//!   ingressClassName: nginx           # with the backends pointed at <svc>-canary
//!   rules:
//!   - host: web.example.com
//!     http:
//!       paths:
//!       - {path: /, pathType: Prefix, backend: {service: {name: web-canary, port: {number: 8080}}}}
//! ```
//!
//! The primary route: as in Flagger, the user's Ingress is left as written, pointing at the
//! apex Service `<svc>`, whose selector Serin points at the `-primary` pods
//! ([`crate::release::services`]); so the traffic the canary Ingress does not take reaches the
//! primary, and a GitOps tool applying the user's Ingress never fights Serin over it.
//!
//! Paths of the user's Ingress that lead to other Services are left out of the copy: the
//! canary splits only the application's traffic. TLS stays with the user's Ingress
//! (ingress-nginx serves a host's canary with the main Ingress's server), and so do the
//! other annotations, which ingress-nginx ignores on a canary Ingress.
//!
//! A/B: ingress-nginx has one `canary-by-header` and one `canary-by-cookie` per Ingress, and
//! sends either every matching request to the canary or none; a cookie matches when its value
//! is `always`. `serin.dev/match` rules beyond that, or a weight other than 0 or 100 with
//! rules, cannot be written and are reported as such.
//!
//! The annotation prefix is the operator's (`--nginx-annotation-prefix`), as ingress-nginx's
//! own `--annotations-prefix`.

use crate::spec::Workload;
use k8s_openapi::api::networking::v1::{
    HTTPIngressPath, HTTPIngressRuleValue, IngressBackend, IngressRule, IngressSpec,
};
use kube::core::{ApiResource, DynamicObject, GroupVersionKind};
use serde_json::{Value, json};

use super::{Router, RouterError, Source, Weights, owned_object, percentages};
use crate::release::CANARY_SUFFIX;
use crate::spec::{CanarySpec, MatchRule};

const GROUP: &str = "networking.k8s.io";
const VERSION: &str = "v1";
const KIND: &str = "Ingress";

/// ingress-nginx's own annotation prefix, the default of `--nginx-annotation-prefix`.
pub const DEFAULT_ANNOTATION_PREFIX: &str = "nginx.ingress.kubernetes.io";

/// The canary-Ingress router, writing annotations under its prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CanaryIngress {
    prefix: String,
}

impl Default for CanaryIngress {
    fn default() -> Self {
        Self::new(DEFAULT_ANNOTATION_PREFIX)
    }
}

impl CanaryIngress {
    pub fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.trim_end_matches('/').to_owned(),
        }
    }

    /// `<prefix>/<name>`.
    pub fn annotation(&self, name: &str) -> String {
        format!("{}/{name}", self.prefix)
    }

    /// The Ingress the user routes through: `serin.dev/ingress`, which validation requires
    /// with `nginx`; the apex Service's name stands in when it is absent.
    fn user_ingress(spec: &CanarySpec) -> &str {
        spec.ingress.as_deref().unwrap_or(&spec.service)
    }

    /// The annotations of the canary Ingress routing by `weights`.
    fn annotations(
        &self,
        spec: &CanarySpec,
        weights: Weights,
        name: &str,
    ) -> Result<Vec<(String, String)>, RouterError> {
        let mut annotations = vec![(self.annotation("canary"), "true".to_owned())];
        if spec.matches.is_empty() || weights.canary() == 0 {
            annotations.push((
                self.annotation("canary-weight"),
                weights.canary().to_string(),
            ));
            return Ok(annotations);
        }
        let cannot = |why: String| RouterError::CannotExpress {
            kind: KIND,
            name: name.to_owned(),
            why,
        };
        if weights != Weights::ALL_CANARY {
            return Err(cannot(format!(
                "ingress-nginx sends either every request that matches serin.dev/match to the \
                 canary or none, not {}%",
                weights.canary()
            )));
        }
        // Requests that match nothing stay with the primary.
        annotations.push((self.annotation("canary-weight"), "0".to_owned()));
        let (mut header, mut cookie) = (false, false);
        for rule in &spec.matches {
            let (seen, what) = match rule {
                MatchRule::Cookie { .. } => (&mut cookie, "cookie"),
                _ => (&mut header, "header"),
            };
            if std::mem::replace(seen, true) {
                return Err(cannot(format!(
                    "ingress-nginx matches one {what} per canary Ingress; serin.dev/match has more"
                )));
            }
            match rule {
                MatchRule::HeaderExact { name, value } => annotations.extend([
                    (self.annotation("canary-by-header"), name.clone()),
                    (self.annotation("canary-by-header-value"), value.clone()),
                ]),
                MatchRule::HeaderRegex { name, regex } => annotations.extend([
                    (self.annotation("canary-by-header"), name.clone()),
                    (self.annotation("canary-by-header-pattern"), regex.clone()),
                ]),
                MatchRule::Cookie { name } => {
                    annotations.push((self.annotation("canary-by-cookie"), name.clone()))
                }
            }
        }
        Ok(annotations)
    }

    fn annotation_value<'a>(&self, object: &'a DynamicObject, name: &str) -> Option<&'a str> {
        object
            .metadata
            .annotations
            .as_ref()?
            .get(&self.annotation(name))
            .map(String::as_str)
    }

    /// Whether the canary Ingress routes matching requests (A/B) apart from the rest.
    fn matches(&self, object: &DynamicObject) -> bool {
        ["canary-by-header", "canary-by-cookie"]
            .iter()
            .any(|a| self.annotation_value(object, a).is_some())
    }

    /// `canary-weight` out of `canary-weight-total` (default 100), as percentages. A missing
    /// weight is 0, as ingress-nginx reads it.
    fn weight_annotation(&self, object: &DynamicObject) -> Result<Weights, RouterError> {
        let name = object.metadata.name.clone().unwrap_or_default();
        let number = |annotation: &str, default: u128| -> Result<u128, RouterError> {
            match self.annotation_value(object, annotation) {
                None => Ok(default),
                Some(text) => text.trim().parse().map_err(|_| RouterError::BadWeight {
                    kind: KIND,
                    name: name.clone(),
                    service: self.annotation(annotation),
                    weight: format!("{text:?}"),
                }),
            }
        };
        let canary = number("canary-weight", 0)?;
        let total = number("canary-weight-total", 100)?;
        percentages(total.saturating_sub(canary), canary.min(total), KIND, &name)
    }
}

impl Router for CanaryIngress {
    fn api_resource(&self) -> ApiResource {
        ApiResource::from_gvk(&GroupVersionKind::gvk(GROUP, VERSION, KIND))
    }

    fn object_name(&self, spec: &CanarySpec) -> String {
        format!("{}{CANARY_SUFFIX}", Self::user_ingress(spec))
    }

    fn source(&self, spec: &CanarySpec) -> Option<Source> {
        Some(Source {
            resource: self.api_resource(),
            name: Self::user_ingress(spec).to_owned(),
        })
    }

    /// Without the user's Ingress there is nothing to copy.
    fn build(
        &self,
        deploy: &dyn Workload,
        spec: &CanarySpec,
        weights: Weights,
    ) -> Result<DynamicObject, RouterError> {
        self.build_from(deploy, spec, weights, None)
    }

    fn build_from(
        &self,
        deploy: &dyn Workload,
        spec: &CanarySpec,
        weights: Weights,
        source: Option<&DynamicObject>,
    ) -> Result<DynamicObject, RouterError> {
        let name = self.object_name(spec);
        let user_ingress = Self::user_ingress(spec);
        let Some(source) = source else {
            return Err(RouterError::MissingSource {
                kind: KIND,
                name,
                source_kind: KIND,
                source_name: user_ingress.to_owned(),
            });
        };
        let user_spec: IngressSpec = source
            .data
            .get("spec")
            .cloned()
            .and_then(|s| serde_json::from_value(s).ok())
            .unwrap_or_default();
        let canary_spec =
            canary_copy(&user_spec, &spec.service).ok_or_else(|| RouterError::MissingBackend {
                kind: KIND,
                name: user_ingress.to_owned(),
                service: spec.service.clone(),
            })?;
        let annotations = self.annotations(spec, weights, &name)?;
        let spec_json = serde_json::to_value(&canary_spec).unwrap_or(Value::Null);
        let mut object = owned_object(
            deploy,
            &name,
            &self.api_resource(),
            json!({ "spec": spec_json }),
        );
        object.metadata.annotations = Some(annotations.into_iter().collect());
        Ok(object)
    }

    fn weights(&self, object: &DynamicObject, _spec: &CanarySpec) -> Result<Weights, RouterError> {
        match self.matches(object) {
            true => Ok(Weights::ALL_CANARY),
            false => self.weight_annotation(object),
        }
    }

    fn unmatched_weights(
        &self,
        object: &DynamicObject,
        _spec: &CanarySpec,
    ) -> Result<Option<Weights>, RouterError> {
        match self.matches(object) {
            true => self.weight_annotation(object).map(Some),
            false => Ok(None),
        }
    }
}

/// The canary's copy of the user's Ingress spec: its class, and the paths (and default
/// backend) that lead to the apex Service `service`, pointed at `<service>-canary` on the
/// same port. `None` when no path leads to the apex Service.
fn canary_copy(user: &IngressSpec, service: &str) -> Option<IngressSpec> {
    let to_canary = |backend: &IngressBackend| -> Option<IngressBackend> {
        let target = backend.service.as_ref()?;
        (target.name == service).then(|| {
            let mut backend = backend.clone();
            if let Some(target) = backend.service.as_mut() {
                target.name = format!("{service}{CANARY_SUFFIX}");
            }
            backend
        })
    };
    let rules: Vec<IngressRule> = user
        .rules
        .iter()
        .flatten()
        .filter_map(|rule| {
            let paths: Vec<HTTPIngressPath> = rule
                .http
                .as_ref()?
                .paths
                .iter()
                .filter_map(|path| {
                    Some(HTTPIngressPath {
                        backend: to_canary(&path.backend)?,
                        ..path.clone()
                    })
                })
                .collect();
            (!paths.is_empty()).then(|| IngressRule {
                host: rule.host.clone(),
                http: Some(HTTPIngressRuleValue { paths }),
            })
        })
        .collect();
    let default_backend = user.default_backend.as_ref().and_then(to_canary);
    if rules.is_empty() && default_backend.is_none() {
        return None;
    }
    Some(IngressSpec {
        ingress_class_name: user.ingress_class_name.clone(),
        default_backend,
        rules: (!rules.is_empty()).then_some(rules),
        tls: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::Deployment;
    use std::collections::BTreeMap;

    use crate::router::testing::web;

    fn spec() -> CanarySpec {
        CanarySpec {
            provider: crate::spec::Provider::Nginx,
            ingress: Some("public".into()),
            ..CanarySpec::defaults("web-svc".into(), Some(9898))
        }
    }

    fn ab_spec(matches: Vec<MatchRule>) -> CanarySpec {
        CanarySpec {
            iterations: Some(5),
            matches,
            ..spec()
        }
    }

    fn header(name: &str, value: &str) -> MatchRule {
        MatchRule::HeaderExact {
            name: name.into(),
            value: value.into(),
        }
    }

    fn cookie(name: &str) -> MatchRule {
        MatchRule::Cookie { name: name.into() }
    }

    fn backend(service: &str, port: Value) -> Value {
        json!({"service": {"name": service, "port": port}})
    }

    /// The user's Ingress `public`: two hosts for the app, one path to another Service.
    fn user_ingress() -> DynamicObject {
        let mut object = DynamicObject::new("public", &CanaryIngress::default().api_resource())
            .data(json!({"spec": {
                "ingressClassName": "nginx",
                "tls": [{"hosts": ["web.example.com"], "secretName": "web-tls"}],
                "rules": [
                    {"host": "web.example.com", "http": {"paths": [
                        {"path": "/", "pathType": "Prefix",
                         "backend": backend("web-svc", json!({"number": 9898}))},
                        {"path": "/search", "pathType": "Prefix",
                         "backend": backend("search", json!({"number": 80}))},
                    ]}},
                    {"host": "www.example.com", "http": {"paths": [
                        {"path": "/", "pathType": "ImplementationSpecific",
                         "backend": backend("web-svc", json!({"name": "http"}))},
                    ]}},
                    {"host": "search.example.com", "http": {"paths": [
                        {"path": "/", "pathType": "Prefix",
                         "backend": backend("search", json!({"number": 80}))},
                    ]}},
                ]
            }}));
        object.metadata.namespace = Some("prod".into());
        object.metadata.annotations = Some(BTreeMap::from([(
            "nginx.ingress.kubernetes.io/rewrite-target".into(),
            "/".into(),
        )]));
        object
    }

    fn build_with(router: &CanaryIngress, spec: &CanarySpec, weights: Weights) -> DynamicObject {
        router
            .build_from(&web(), spec, weights, Some(&user_ingress()))
            .unwrap_or_else(|e| panic!("{e}"))
    }

    fn build(spec: &CanarySpec, weights: Weights) -> DynamicObject {
        build_with(&CanaryIngress::default(), spec, weights)
    }

    fn annotations(object: &DynamicObject) -> BTreeMap<String, String> {
        object.metadata.annotations.clone().unwrap_or_default()
    }

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn the_canary_ingress_copies_the_apps_rules_to_the_canary_service_with_its_weight() {
        let object = build(&spec(), Weights::to_canary(25));
        let value = serde_json::to_value(&object).unwrap_or_default();
        assert_eq!(
            value,
            json!({
                "apiVersion": "networking.k8s.io/v1",
                "kind": "Ingress",
                "metadata": {
                    "name": "public-canary",
                    "namespace": "prod",
                    "labels": {"serin.dev/owner": "web"},
                    "annotations": {
                        "nginx.ingress.kubernetes.io/canary": "true",
                        "nginx.ingress.kubernetes.io/canary-weight": "25",
                    },
                    "ownerReferences": [{
                        "apiVersion": "apps/v1", "kind": "Deployment", "name": "web",
                        "uid": "uid-1", "controller": true, "blockOwnerDeletion": true
                    }]
                },
                "spec": {
                    "ingressClassName": "nginx",
                    "rules": [
                        {"host": "web.example.com", "http": {"paths": [
                            {"path": "/", "pathType": "Prefix",
                             "backend": backend("web-svc-canary", json!({"number": 9898}))},
                        ]}},
                        {"host": "www.example.com", "http": {"paths": [
                            {"path": "/", "pathType": "ImplementationSpecific",
                             "backend": backend("web-svc-canary", json!({"name": "http"}))},
                        ]}},
                    ]
                }
            })
        );
        assert_eq!(CanaryIngress::default().api_resource().plural, "ingresses");
        assert_eq!(
            CanaryIngress::default().object_name(&spec()),
            "public-canary"
        );
        let source = CanaryIngress::default().source(&spec());
        assert_eq!(source.map(|s| s.name).as_deref(), Some("public"));
    }

    #[test]
    fn a_default_backend_on_the_apex_service_is_copied_too() {
        let mut user = user_ingress();
        user.data =
            json!({"spec": {"defaultBackend": backend("web-svc", json!({"number": 9898}))}});
        let object = CanaryIngress::default()
            .build_from(&web(), &spec(), Weights::ALL_PRIMARY, Some(&user))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            object.data,
            json!({"spec": {"defaultBackend": backend("web-svc-canary", json!({"number": 9898}))}})
        );
    }

    #[test]
    fn weights_read_back_equal_the_weights_written() {
        let router = CanaryIngress::default();
        for canary in [0, 1, 10, 50, 99, 100] {
            let written = Weights::to_canary(canary);
            let object = build(&spec(), written);
            // The simulator reads without the spec's rules or ingress.
            let reader = CanarySpec::defaults("web-svc".into(), None);
            assert_eq!(router.weights(&object, &reader), Ok(written));
            assert_eq!(router.unmatched_weights(&object, &reader), Ok(None));
        }
        for written in [Weights::ALL_PRIMARY, Weights::ALL_CANARY] {
            let object = build(&ab_spec(vec![cookie("canary")]), written);
            assert_eq!(router.weights(&object, &spec()), Ok(written));
        }
    }

    #[test]
    fn weights_as_ingress_nginx_reads_them_are_normalised() {
        let router = CanaryIngress::default();
        let mut object = build(&spec(), Weights::ALL_PRIMARY);
        let with = |object: &mut DynamicObject, pairs: &[(&str, &str)]| {
            object.metadata.annotations = Some(map(pairs));
        };
        with(
            &mut object,
            &[
                ("nginx.ingress.kubernetes.io/canary-weight", "3"),
                ("nginx.ingress.kubernetes.io/canary-weight-total", "4"),
            ],
        );
        assert_eq!(router.weights(&object, &spec()), Ok(Weights::to_canary(75)));
        with(
            &mut object,
            &[("nginx.ingress.kubernetes.io/canary", "true")],
        );
        assert_eq!(router.weights(&object, &spec()), Ok(Weights::ALL_PRIMARY));
        with(
            &mut object,
            &[("nginx.ingress.kubernetes.io/canary-weight", "ten")],
        );
        assert_eq!(
            router.weights(&object, &spec()),
            Err(RouterError::BadWeight {
                kind: "Ingress",
                name: "public-canary".into(),
                service: "nginx.ingress.kubernetes.io/canary-weight".into(),
                weight: "\"ten\"".into(),
            })
        );
    }

    #[test]
    fn ab_rules_become_header_and_cookie_annotations_while_the_canary_gets_traffic() {
        let router = CanaryIngress::default();
        let exact = ab_spec(vec![header("x-canary", "insider"), cookie("canary")]);
        let object = build(&exact, Weights::ALL_CANARY);
        assert_eq!(
            annotations(&object),
            map(&[
                ("nginx.ingress.kubernetes.io/canary", "true"),
                ("nginx.ingress.kubernetes.io/canary-weight", "0"),
                ("nginx.ingress.kubernetes.io/canary-by-header", "x-canary"),
                (
                    "nginx.ingress.kubernetes.io/canary-by-header-value",
                    "insider"
                ),
                ("nginx.ingress.kubernetes.io/canary-by-cookie", "canary"),
            ])
        );
        assert_eq!(router.weights(&object, &exact), Ok(Weights::ALL_CANARY));
        assert_eq!(
            router.unmatched_weights(&object, &exact),
            Ok(Some(Weights::ALL_PRIMARY))
        );

        let pattern = ab_spec(vec![MatchRule::HeaderRegex {
            name: "user-agent".into(),
            regex: ".*Firefox.*".into(),
        }]);
        let object = build(&pattern, Weights::ALL_CANARY);
        assert_eq!(
            annotations(&object),
            map(&[
                ("nginx.ingress.kubernetes.io/canary", "true"),
                ("nginx.ingress.kubernetes.io/canary-weight", "0"),
                ("nginx.ingress.kubernetes.io/canary-by-header", "user-agent"),
                (
                    "nginx.ingress.kubernetes.io/canary-by-header-pattern",
                    ".*Firefox.*"
                ),
            ])
        );

        // Between releases, and after a rollback, nothing reaches the canary, match or not.
        let idle = build(&exact, Weights::ALL_PRIMARY);
        assert_eq!(
            annotations(&idle),
            map(&[
                ("nginx.ingress.kubernetes.io/canary", "true"),
                ("nginx.ingress.kubernetes.io/canary-weight", "0"),
            ])
        );
        assert_eq!(router.unmatched_weights(&idle, &exact), Ok(None));
    }

    #[test]
    fn what_ingress_nginx_cannot_match_is_refused_with_the_reason() {
        let router = CanaryIngress::default();
        let refused = |spec: &CanarySpec, weights| {
            router
                .build_from(&web(), spec, weights, Some(&user_ingress()))
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default()
        };
        let two_headers = ab_spec(vec![header("a", "1"), header("b", "2")]);
        assert_eq!(
            refused(&two_headers, Weights::ALL_CANARY),
            "Ingress public-canary: ingress-nginx matches one header per canary Ingress; \
             serin.dev/match has more"
        );
        let two_cookies = ab_spec(vec![cookie("a"), cookie("b")]);
        assert!(refused(&two_cookies, Weights::ALL_CANARY).contains("one cookie"));
        let half = refused(&ab_spec(vec![cookie("a")]), Weights::to_canary(50));
        assert!(half.contains("every request that matches"), "{half}");
    }

    #[test]
    fn the_annotation_prefix_is_the_operators() {
        let router = CanaryIngress::new("ingress.example.com/");
        let object = build_with(&router, &ab_spec(vec![cookie("beta")]), Weights::ALL_CANARY);
        assert_eq!(
            annotations(&object),
            map(&[
                ("ingress.example.com/canary", "true"),
                ("ingress.example.com/canary-weight", "0"),
                ("ingress.example.com/canary-by-cookie", "beta"),
            ])
        );
        assert_eq!(router.weights(&object, &spec()), Ok(Weights::ALL_CANARY));
        let plain = build_with(&router, &spec(), Weights::to_canary(40));
        assert_eq!(router.weights(&plain, &spec()), Ok(Weights::to_canary(40)));
        // Under another prefix the annotations are not ingress-nginx's: no weight is read.
        assert_eq!(
            CanaryIngress::default().weights(&plain, &spec()),
            Ok(Weights::ALL_PRIMARY)
        );
    }

    #[test]
    fn without_the_users_ingress_or_a_path_to_the_app_there_is_nothing_to_copy() {
        let router = CanaryIngress::default();
        assert_eq!(
            router.build(&web(), &spec(), Weights::ALL_PRIMARY).err(),
            Some(RouterError::MissingSource {
                kind: "Ingress",
                name: "public-canary".into(),
                source_kind: "Ingress",
                source_name: "public".into(),
            })
        );
        let other_app = CanarySpec {
            service: "api".into(),
            ..spec()
        };
        assert_eq!(
            router
                .build_from(
                    &web(),
                    &other_app,
                    Weights::ALL_PRIMARY,
                    Some(&user_ingress())
                )
                .err(),
            Some(RouterError::MissingBackend {
                kind: "Ingress",
                name: "public".into(),
                service: "api".into(),
            })
        );
    }

    /// The same validation admission runs: `nginx` needs `serin.dev/ingress`, and may match.
    #[test]
    fn an_nginx_release_needs_its_ingress_and_may_match() {
        let deployment = |annotations: Value| -> Deployment {
            serde_json::from_value(json!({
                "metadata": {"name": "web", "namespace": "prod", "annotations": annotations},
                "spec": {
                    "selector": {"matchLabels": {"app": "web"}},
                    "template": {"spec": {"containers": [
                        {"name": "app", "ports": [{"containerPort": 8080}]}
                    ]}}
                }
            }))
            .unwrap_or_else(|e| panic!("{e}"))
        };
        let without = deployment(json!({
            "serin.dev/enabled": "true", "serin.dev/provider": "nginx",
        }));
        let refused = crate::spec::read_deployment(&without)
            .err()
            .map(|p| p.to_string())
            .unwrap_or_default();
        assert!(
            refused.contains("serin.dev/ingress: is required"),
            "{refused}"
        );
        let ab = deployment(json!({
            "serin.dev/enabled": "true", "serin.dev/provider": "nginx",
            "serin.dev/ingress": "public", "serin.dev/service": "web-svc",
            "serin.dev/iterations": "5",
            "serin.dev/match": "header:x-canary=insider,cookie:canary",
        }));
        match crate::spec::read_deployment(&ab) {
            Ok(crate::spec::OptIn::Enabled(spec)) => {
                let object = build(&spec, Weights::ALL_CANARY);
                assert_eq!(object.metadata.name.as_deref(), Some("public-canary"));
                assert_eq!(
                    annotations(&object)
                        .get("nginx.ingress.kubernetes.io/canary-by-header-value")
                        .map(String::as_str),
                    Some("insider")
                );
            }
            other => panic!("nginx with serin.dev/match: {other:?}"),
        }
    }
}
