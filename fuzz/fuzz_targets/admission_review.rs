//! Arbitrary bytes as an AdmissionReview body: decoding refuses what it cannot read, and
//! whatever decodes goes through both decisions, as the webhook handlers do. Nothing may
//! panic.
//!
//! Random bytes rarely make JSON; seed `corpus/admission_review/` with real reviews and use
//! `admission_review.dict` to get past the parser (see fuzz/README.md).

#![no_main]

use libfuzzer_sys::fuzz_target;
use serin::admission::DEFAULT_SERVICE_ACCOUNT;
use serin::admission::deployments::{PolicyView, mutate, validate};
use serin::admission::review::decode_deployment;
use serin::crd::PolicyDefaults;

fuzz_target!(|body: &[u8]| {
    let Ok(request) = decode_deployment(body) else {
        return;
    };
    let verdict = validate(&request, &PolicyView::default());
    let _ = mutate(&request, DEFAULT_SERVICE_ACCOUNT, &PolicyDefaults::default());
    // A refusal always says why.
    assert!(verdict.allowed || !verdict.result.message.is_empty());
});
