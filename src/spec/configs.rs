//! The ConfigMaps and Secrets a pod template uses: what the release tracks, hashes and copies
//! to `-primary`, and what the names check measures (see [`super::names`]).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{PodSpec, PodTemplateSpec};

/// The kind of a tracked config object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ConfigKind {
    ConfigMap,
    Secret,
}

impl std::fmt::Display for ConfigKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ConfigKind::ConfigMap => "ConfigMap",
            ConfigKind::Secret => "Secret",
        })
    }
}

/// A ConfigMap or Secret the pod template uses.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConfigRef {
    pub kind: ConfigKind,
    pub name: String,
    /// Every reference to it is marked `optional: true`: its absence is not an error.
    pub optional: bool,
}

/// The ConfigMaps and Secrets the pod template refers to, sorted by kind and name, each once.
pub fn config_refs(template: &PodTemplateSpec) -> Vec<ConfigRef> {
    let mut found: BTreeMap<(ConfigKind, String), bool> = BTreeMap::new();
    if let Some(mut spec) = template.spec.clone() {
        visit_config_refs(&mut spec, &mut |kind, name, optional| {
            let optional = optional.unwrap_or(false);
            found
                .entry((kind, name.clone()))
                .and_modify(|all| *all &= optional)
                .or_insert(optional);
        });
    }
    found
        .into_iter()
        .map(|((kind, name), optional)| ConfigRef {
            kind,
            name,
            optional,
        })
        .collect()
}

/// Calls `visit(kind, name, optional)` on every ConfigMap/Secret reference of a pod spec: the
/// one walk behind both [`config_refs`] and [`crate::release::rewrite_config_refs`].
pub(crate) fn visit_config_refs(
    pod: &mut PodSpec,
    visit: &mut impl FnMut(ConfigKind, &mut String, Option<bool>),
) {
    use ConfigKind::{ConfigMap, Secret};
    for volume in pod.volumes.iter_mut().flatten() {
        if let Some(cm) = volume.config_map.as_mut() {
            visit(ConfigMap, &mut cm.name, cm.optional);
        }
        if let Some(secret) = volume.secret.as_mut()
            && let Some(name) = secret.secret_name.as_mut()
        {
            visit(Secret, name, secret.optional);
        }
        let sources = volume.projected.as_mut().and_then(|p| p.sources.as_mut());
        for source in sources.into_iter().flatten() {
            if let Some(cm) = source.config_map.as_mut() {
                visit(ConfigMap, &mut cm.name, cm.optional);
            }
            if let Some(secret) = source.secret.as_mut() {
                visit(Secret, &mut secret.name, secret.optional);
            }
        }
    }
    let init = pod.init_containers.iter_mut().flatten();
    for container in pod.containers.iter_mut().chain(init) {
        for from in container.env_from.iter_mut().flatten() {
            if let Some(cm) = from.config_map_ref.as_mut() {
                visit(ConfigMap, &mut cm.name, cm.optional);
            }
            if let Some(secret) = from.secret_ref.as_mut() {
                visit(Secret, &mut secret.name, secret.optional);
            }
        }
        let sources = container.env.iter_mut().flatten();
        for source in sources.filter_map(|e| e.value_from.as_mut()) {
            if let Some(cm) = source.config_map_key_ref.as_mut() {
                visit(ConfigMap, &mut cm.name, cm.optional);
            }
            if let Some(secret) = source.secret_key_ref.as_mut() {
                visit(Secret, &mut secret.name, secret.optional);
            }
        }
    }
}
