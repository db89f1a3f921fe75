//! The charts' numeric axes: a linear scale from data to pixels, "nice" tick steps and
//! their labels.

/// A linear map from a domain to a range of pixels.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) struct Linear {
    pub(super) domain: (f64, f64),
    range: (f64, f64),
}

impl Linear {
    /// A zero-width domain is widened by one unit, so that a single value still maps.
    pub(super) fn new(domain: (f64, f64), range: (f64, f64)) -> Self {
        let domain = if domain.1 > domain.0 {
            domain
        } else {
            (domain.0, domain.0 + 1.0)
        };
        Linear { domain, range }
    }

    pub(super) fn map(&self, value: f64) -> f64 {
        let (d0, d1) = self.domain;
        let (r0, r1) = self.range;
        r0 + (value - d0) / (d1 - d0) * (r1 - r0)
    }

    /// Round tick values inside the domain, about `target` of them.
    pub(super) fn ticks(&self, target: usize) -> (Vec<f64>, f64) {
        let (d0, d1) = self.domain;
        let step = nice_step(d1 - d0, target);
        let first = (d0 / step).ceil();
        let ticks = (0..)
            .map(|i| (first + f64::from(i)) * step)
            .take_while(|t| *t <= d1 + step * 1e-9)
            .collect();
        (ticks, step)
    }
}

/// A step of 1, 2 or 5 times a power of ten that cuts `span` into about `target` parts.
pub(super) fn nice_step(span: f64, target: usize) -> f64 {
    let raw = span / target.max(1) as f64;
    if !raw.is_finite() || raw <= 0.0 {
        return 1.0;
    }
    let magnitude = 10f64.powf(raw.log10().floor());
    let factor = match raw / magnitude {
        n if n <= 1.5 => 1.0,
        n if n <= 3.0 => 2.0,
        n if n <= 7.0 => 5.0,
        _ => 10.0,
    };
    factor * magnitude
}

/// A tick value with as many decimals as its step needs.
pub(super) fn tick_label(value: f64, step: f64) -> String {
    let decimals = if step >= 1.0 {
        0
    } else {
        (-step.log10()).ceil() as usize
    };
    // -0 reads oddly on an axis.
    let value = if value.abs() < step * 1e-9 {
        0.0
    } else {
        value
    };
    format!("{value:.decimals$}")
}

/// A number with at most `decimals` decimals and no trailing zeros.
pub(super) fn trim_number(value: f64, decimals: usize) -> String {
    let text = format!("{value:.decimals$}");
    if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.').to_owned()
    } else {
        text
    }
}
