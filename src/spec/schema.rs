//! The JSON Schema of [`CanarySpec`], derived from the Rust types with schemars (the same
//! derivation the `Canary` CRD uses), and the check of parsed annotations against it with the
//! `jsonschema` crate. Ranges, enums and name patterns live on the types; this module turns a
//! schema error back into a line about the annotation that caused it.

use std::collections::BTreeSet;
use std::sync::LazyLock;

use jsonschema::Validator;
use schemars::generate::SchemaSettings;
use serde_json::Value;

use super::Problem;
use super::annotations::{Key, Reading};
use super::model::CanarySpec;

static SCHEMA: LazyLock<Value> = LazyLock::new(|| {
    // Inlined so each property's bounds are found at `properties.<field>`, without `$ref`s.
    let generator = SchemaSettings::draft2020_12()
        .with(|settings| settings.inline_subschemas = true)
        .into_generator();
    generator.into_root_schema_for::<CanarySpec>().into()
});

/// Compiled once. Formats are validated so that `format: regex` refuses a broken regex.
/// An error here is a bug in the model's attributes, caught by the tests below; it is kept as a
/// value rather than a panic because the webhook calls this on every Deployment write.
static VALIDATOR: LazyLock<Result<Validator, String>> = LazyLock::new(|| {
    jsonschema::options()
        .should_validate_formats(true)
        .build(&SCHEMA)
        .map_err(|e| e.to_string())
});

/// The JSON Schema that the annotation set, once parsed, is checked against.
pub fn annotation_schema() -> &'static Value {
    &SCHEMA
}

/// The `minimum` and `maximum` the schema gives `field` (or its items, for a list).
pub(super) fn range(field: &str) -> Option<(Value, Value)> {
    let property = SCHEMA.get("properties")?.get(field)?;
    let bounds = property.get("items").unwrap_or(property);
    Some((
        bounds.get("minimum")?.clone(),
        bounds.get("maximum")?.clone(),
    ))
}

/// Validates the parsed spec, one problem per offending annotation (per rule for `match`, per
/// host for `hosts`).
pub(super) fn check(reading: &mut Reading<'_>) {
    let validator = match &*VALIDATOR {
        Ok(validator) => validator,
        Err(error) => return reading.problems.push(internal(error)),
    };
    let instance = match serde_json::to_value(&reading.spec) {
        Ok(instance) => instance,
        Err(error) => return reading.problems.push(internal(&error.to_string())),
    };
    let mut offenders: BTreeSet<(Key, Option<usize>)> = BTreeSet::new();
    for error in validator.iter_errors(&instance) {
        // `/stepWeights/1` → step-weights; `/matches/2/name` → the third match rule;
        // `/hosts/0` → the first host.
        let mut segments = error.instance_path().as_str().split('/').skip(1);
        match segments.next().and_then(Key::for_field) {
            Some(key @ (Key::Match | Key::Hosts)) => {
                offenders.insert((key, segments.next().and_then(|i| i.parse().ok())));
            }
            Some(key) => {
                offenders.insert((key, None));
            }
            None => reading.problems.push(internal(&error.to_string())),
        }
    }
    for (key, rule) in offenders {
        let problem = match (rule, reading.written.get(&key)) {
            (Some(i), _) => {
                let item = match key {
                    Key::Hosts => reading.spec.hosts.get(i).cloned(),
                    _ => reading.spec.matches.get(i).map(ToString::to_string),
                };
                key.refuse(&item.unwrap_or_default())
            }
            (None, Some(raw)) => key.refuse(raw),
            (None, None) => Problem::new(
                key.annotation(),
                format!("{} {}", reading.shown(key), key.expectation()),
            ),
        };
        reading.refuse(key, problem);
    }
}

/// A schema that does not fit the model is Serin's bug, not the user's; say so.
fn internal(error: &str) -> Problem {
    Problem::new(
        super::PREFIX,
        format!("internal error in Serin's annotation schema, please report it: {error}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn valid_spec() -> Value {
        serde_json::to_value(CanarySpec::defaults("podinfo".into(), Some(9898))).unwrap_or_default()
    }

    fn accepts(instance: &Value) -> bool {
        matches!(&*VALIDATOR, Ok(v) if v.is_valid(instance))
    }

    #[test]
    fn schema_compiles_and_accepts_the_defaults() {
        assert!(VALIDATOR.is_ok(), "{:?}", VALIDATOR.as_ref().err());
        assert!(accepts(&valid_spec()));
    }

    #[test]
    fn schema_rejects_an_out_of_range_step_weight() {
        let mut instance = valid_spec();
        instance["stepWeight"] = json!(0);
        assert!(!accepts(&instance));
        instance["stepWeight"] = json!(101);
        assert!(!accepts(&instance));
    }

    #[test]
    fn schema_rejects_an_unknown_provider() {
        let mut instance = valid_spec();
        instance["provider"] = json!("istio");
        assert!(!accepts(&instance));
    }

    #[test]
    fn schema_rejects_a_broken_header_regex() {
        let mut instance = valid_spec();
        instance["matches"] = json!([{"type": "headerRegex", "name": "x-canary", "regex": "(["}]);
        assert!(!accepts(&instance));
        instance["matches"] =
            json!([{"type": "headerRegex", "name": "x-canary", "regex": "^ins.*"}]);
        assert!(accepts(&instance));
    }

    #[test]
    fn schema_rejects_a_service_name_with_dots() {
        let mut instance = valid_spec();
        instance["service"] = json!("my.app");
        assert!(!accepts(&instance));
    }

    #[test]
    fn every_numeric_annotation_has_its_range_in_the_schema() {
        for key in [
            Key::Port,
            Key::Threshold,
            Key::StepWeight,
            Key::StepWeights,
            Key::MaxWeight,
            Key::Iterations,
            Key::SuccessRate,
        ] {
            assert!(range(key.field().unwrap_or_default()).is_some(), "{key:?}");
        }
        assert_eq!(range("stepWeights"), Some((json!(1), json!(100))));
    }

    #[test]
    fn every_spec_field_is_an_annotation() {
        let properties = SCHEMA.get("properties").and_then(Value::as_object);
        let fields: Vec<&String> = properties.map(|p| p.keys().collect()).unwrap_or_default();
        assert!(!fields.is_empty());
        for field in fields {
            assert!(Key::for_field(field).is_some(), "{field} has no annotation");
        }
    }
}
