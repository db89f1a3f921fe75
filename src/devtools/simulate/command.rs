//! `serin simulate` (hidden, `dev-tools` builds only): the local environment's traffic
//! simulator. It follows the router objects Serin owns through the API server and serves
//! Linkerd-style series for Prometheus on `--listen` (plain HTTP: `/metrics`, `/healthz`).
//! See [`super`].

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use tokio::net::TcpListener;

use super::serve::{self, Options};
use crate::cli::{LogFormat, kube_client, shutdown_signal};

// The first three are serving flags of `serin run` too, with the same variables and defaults.
#[derive(Debug, Args)]
pub struct SimulateArgs {
    /// Address of the simulator's plain-HTTP listener (/metrics, /healthz).
    #[arg(long, env = "SERIN_LISTEN", default_value = "0.0.0.0:8443")]
    pub listen: SocketAddr,
    /// Kubeconfig file; without it `KUBECONFIG`, then the in-cluster service account.
    #[arg(long, env = "SERIN_KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// Log format.
    #[arg(long, env = "SERIN_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Requests per second each router object receives, split by its weights.
    #[arg(long, default_value_t = 50.0, value_parser = positive_rate)]
    pub requests_per_second: f64,
    /// Draw every version's requests and failures at random from this seed (binomial draws
    /// per tick), as `simulate.serin.dev/noise-seed` does for one version. Off by default:
    /// the counters are then exact shares of the rate.
    #[arg(long, env = "SERIN_SIMULATE_NOISE_SEED")]
    pub noise_seed: Option<u64>,
}

fn positive_rate(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(rate) if rate.is_finite() && rate > 0.0 => Ok(rate),
        _ => Err(format!("{text:?} is not a positive number")),
    }
}

pub fn run(args: &SimulateArgs) -> anyhow::Result<()> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?
        .block_on(async {
            crate::server::install_crypto_provider();
            let client = kube_client(args.kubeconfig.as_deref(), Default::default()).await?;
            let listener = TcpListener::bind(args.listen)
                .await
                .with_context(|| format!("binding the simulator's listener {}", args.listen))?;
            let options = Options {
                requests_per_second: args.requests_per_second,
                tick: serve::DEFAULT_TICK,
                noise_seed: args.noise_seed,
            };
            serve::serve(client, listener, options, shutdown_signal())
                .await
                .context("serving the simulated metrics")
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_request_rate_must_be_a_positive_number() {
        assert_eq!(positive_rate("12.5"), Ok(12.5));
        for bad in ["0", "-1", "NaN", "inf", "many"] {
            assert!(positive_rate(bad).is_err(), "{bad}");
        }
    }
}
