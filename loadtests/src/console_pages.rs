//! `aiq-load console`: how long the web console's pages take in a real browser, over
//! whatever history the tenant has (`scripts/bench-console` fills it with 100,000 runs).
//!
//! Headless Chromium (through chromedriver) signs in once, then opens every main page
//! `--loads` times in rotation, the way a person clicks through the navigation: the
//! fragment changes, the page asks the API for its data and draws it. A page's time runs
//! from the fragment's change to the console marking the view rendered
//! (`body[data-rendered]`, set once the page's first data is on screen), measured in the
//! page by a MutationObserver, so it holds the API calls, their JSON and the drawing, and
//! none of WebDriver's own round trips. `--reloads` more times each page is opened cold
//! (a new document: HTML, modules, `/v1/me`, then the page), timed from the navigation's
//! start.
//!
//!   aiq-load console --api http://127.0.0.1:18193 --token "$TOKEN" \
//!       --webdriver http://127.0.0.1:9515 --loads 40 --reloads 5 --out DIR

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use fantoccini::{Client, ClientBuilder};
use serde_json::{Value, json};

#[derive(clap::Args)]
pub struct ConsoleArgs {
    /// Base URL of the running `aiq serve` (the console is its `/`).
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    api: String,
    /// The credential the console signs in with: a bearer token of the measured tenant
    /// (`aiq token --tenant T --role tenant_admin`).
    #[arg(long, env = "AIQ_LOAD_TOKEN", hide_env_values = true)]
    token: String,
    /// chromedriver's URL (`scripts/services env` prints it as AIQ_WEBDRIVER_URL).
    #[arg(
        long,
        env = "AIQ_WEBDRIVER_URL",
        default_value = "http://127.0.0.1:9515"
    )]
    webdriver: String,
    /// The Chromium binary.
    #[arg(long, env = "AIQ_CHROMIUM", default_value = "/usr/bin/chromium")]
    chromium: String,
    /// Times each page is opened by following the navigation.
    #[arg(long, default_value_t = 40)]
    loads: usize,
    /// Times each page is opened as a new document.
    #[arg(long, default_value_t = 5)]
    reloads: usize,
    /// The 95th percentile the report checks every page against, in milliseconds.
    #[arg(long, default_value_t = 200.0)]
    target_p95_ms: f64,
    /// Waits (up to --wait-secs) until the tenant's history lists at least this many
    /// runs: the sink writes a run's row moments after its last event.
    #[arg(long, default_value_t = 0)]
    min_runs: u64,
    #[arg(long, default_value_t = 300)]
    wait_secs: u64,
    /// Where report.md and summary.json go.
    #[arg(long, default_value = "aiq-load-console")]
    out: PathBuf,
}

/// One page of the console: its name in the report, the fragments it is opened at (one
/// per load, in rotation) and the API calls it makes, for the reader.
struct Page {
    name: &'static str,
    fragments: Vec<String>,
    asks: &'static str,
}

/// Times in milliseconds, sorted.
#[derive(Default)]
struct Times(Vec<f64>);

impl Times {
    fn push(&mut self, ms: f64) {
        self.0.push(ms);
    }

    fn sorted(&self) -> Vec<f64> {
        let mut v = self.0.clone();
        v.sort_by(f64::total_cmp);
        v
    }

    /// Nearest-rank percentile.
    fn pct(&self, p: f64) -> f64 {
        let v = self.sorted();
        if v.is_empty() {
            return f64::NAN;
        }
        let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
        v[rank.clamp(1, v.len()) - 1]
    }

    fn max(&self) -> f64 {
        self.sorted().last().copied().unwrap_or(f64::NAN)
    }
}

/// Waits for the console's next rendered view after `arguments[0]` runs, in the page.
const NAVIGATE: &str = r#"
const [hash, done] = [arguments[0], arguments[arguments.length - 1]];
const before = document.body.dataset.rendered || "0";
const observer = new MutationObserver(() => {
  if (document.body.dataset.rendered !== before && document.body.dataset.view === want) {
    observer.disconnect();
    clearTimeout(timer);
    done(performance.now() - t0);
  }
});
const timer = setTimeout(() => { observer.disconnect(); done(-1); }, 20000);
observer.observe(document.body, { attributes: true, attributeFilter: ["data-rendered"] });
const t0 = performance.now();
location.hash = hash;
const want = location.hash;
"#;

/// Waits for a new document's first rendered view; its time since the navigation began.
const COLD: &str = r#"
const done = arguments[arguments.length - 1];
const t = () => document.body && document.body.dataset.rendered
  && document.body.dataset.view === location.hash;
if (t()) { done(performance.now()); } else {
  const timer = setTimeout(() => { observer.disconnect(); done(-1); }, 20000);
  const observer = new MutationObserver(() => {
    if (t()) { observer.disconnect(); clearTimeout(timer); done(performance.now()); }
  });
  observer.observe(document.documentElement, { attributes: true, subtree: true, attributeFilter: ["data-rendered"] });
}
"#;

pub async fn run(args: ConsoleArgs) -> anyhow::Result<()> {
    let http = crate::loadgen::http_client()
        .build()
        .context("building the HTTP client")?;
    let api = args.api.trim_end_matches('/').to_owned();
    let get = |path: &str| {
        let req = http
            .get(format!("{api}{path}"))
            .bearer_auth(&args.token)
            .timeout(Duration::from_secs(30));
        let path = path.to_owned();
        async move {
            let resp = req.send().await.with_context(|| format!("GET {path}"))?;
            let status = resp.status();
            let body: Value = resp.json().await.with_context(|| format!("GET {path}"))?;
            if !status.is_success() {
                bail!("GET {path}: {status}: {body}");
            }
            anyhow::Ok(body)
        }
    };

    let me = get("/v1/me").await?;
    let tenant = me["tenant"].as_str().unwrap_or_default().to_owned();
    let deadline = std::time::Instant::now() + Duration::from_secs(args.wait_secs);
    let (in_history, pages_read) = loop {
        let (n, pages) = count_runs(&get).await?;
        if n >= args.min_runs || std::time::Instant::now() >= deadline {
            break (n, pages);
        }
        eprintln!("{n} runs in the history, waiting for {}", args.min_runs);
        tokio::time::sleep(Duration::from_secs(5)).await;
    };
    eprintln!("tenant {tenant}: {in_history} runs in the last 24 hours ({pages_read} pages)");
    let newest = get("/v1/runs?limit=50").await?;
    let run_ids: Vec<String> = newest["runs"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r["run_id"].as_str().map(str::to_owned))
        .collect();
    if run_ids.is_empty() {
        bail!("tenant {tenant} has no runs in the last 24 hours to open");
    }
    let workflows = get("/v1/workflows").await?;
    let workflow_ids: Vec<String> = workflows
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|w| w["workflow"].as_str().map(str::to_owned))
        .collect();
    if workflow_ids.is_empty() {
        bail!("tenant {tenant} has no workflows");
    }

    let pages = vec![
        Page {
            name: "Runs",
            fragments: vec!["#/runs".into()],
            asks: "GET /v1/runs?limit=50",
        },
        Page {
            name: "Runs, by status",
            fragments: vec!["#/runs?status=succeeded".into()],
            asks: "GET /v1/runs?status=succeeded&limit=50",
        },
        Page {
            name: "Runs, by workflow",
            fragments: workflow_ids
                .iter()
                .map(|w| format!("#/runs?workflow={w}"))
                .collect(),
            asks: "GET /v1/runs?workflow=W&limit=50",
        },
        Page {
            name: "A run's timeline",
            fragments: run_ids.iter().map(|r| format!("#/runs/{r}")).collect(),
            asks: "GET /v1/runs/{id} (run and steps)",
        },
        Page {
            name: "Workflows",
            fragments: vec!["#/workflows".into()],
            asks: "GET /v1/workflows",
        },
        Page {
            name: "A workflow (graph)",
            fragments: workflow_ids
                .iter()
                .map(|w| format!("#/workflows/{w}"))
                .collect(),
            asks: "GET /v1/workflows, GET …/versions/{v}",
        },
        Page {
            name: "Dead letters",
            fragments: vec!["#/dead-letters".into()],
            asks: "GET /v1/dead-letters?limit=100",
        },
        Page {
            name: "Insights",
            fragments: vec!["#/insights".into()],
            asks: "GET /v1/reports/{3 reports}, two at a time",
        },
        Page {
            name: "Administration",
            fragments: vec!["#/admin".into()],
            asks: "GET /v1/api-keys, /v1/secrets, /v1/workflows + each version",
        },
        Page {
            name: "Builder",
            fragments: vec!["#/build".into()],
            asks: "GET /v1/connectors, /v1/secrets",
        },
    ];

    let browser = browser(&args.webdriver, &args.chromium).await?;
    let outcome = measure(&browser, &api, &args, &pages).await;
    let _ = browser.close().await;
    let (warm, cold) = outcome?;

    std::fs::create_dir_all(&args.out).with_context(|| format!("creating {:?}", args.out))?;
    let mut md = format!(
        "Tenant `{tenant}`, {in_history} runs in the history's last 24 hours (counted by \
         paging GET /v1/runs). Headless Chromium; each page opened {} times by navigation \
         (warm) and {} times as a new document (cold). Times in ms, from the navigation to \
         the page's data drawn.\n\n\
         | page | asks the API | warm p50 | warm p95 | warm max | cold p50 | cold p95 | cold max |\n\
         |---|---|---:|---:|---:|---:|---:|---:|\n",
        args.loads, args.reloads
    );
    let mut rows = Vec::new();
    let mut over = Vec::new();
    for ((p, w), c) in pages.iter().zip(&warm).zip(&cold) {
        md.push_str(&format!(
            "| {} | {} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} |\n",
            p.name,
            p.asks,
            w.pct(50.0),
            w.pct(95.0),
            w.max(),
            c.pct(50.0),
            c.pct(95.0),
            c.max()
        ));
        if w.pct(95.0) >= args.target_p95_ms {
            over.push(p.name);
        }
        rows.push(json!({
            "page": p.name, "asks": p.asks,
            "warm_ms": w.sorted(), "cold_ms": c.sorted(),
            "warm_p50": w.pct(50.0), "warm_p95": w.pct(95.0), "warm_max": w.max(),
            "cold_p50": c.pct(50.0), "cold_p95": c.pct(95.0), "cold_max": c.max(),
        }));
    }
    let mut all = Times::default();
    for w in &warm {
        for &ms in &w.0 {
            all.push(ms);
        }
    }
    md.push_str(&format!(
        "\nEvery warm navigation together: p50 {:.1} ms, p95 {:.1} ms, max {:.1} ms over {} \
         loads. Target: p95 < {} ms on every page; {}.\n",
        all.pct(50.0),
        all.pct(95.0),
        all.max(),
        all.0.len(),
        args.target_p95_ms,
        if over.is_empty() {
            "every page meets it".to_owned()
        } else {
            format!("missed by {}", over.join(", "))
        }
    ));
    std::fs::write(args.out.join("report.md"), &md).context("writing report.md")?;
    std::fs::write(
        args.out.join("summary.json"),
        serde_json::to_vec_pretty(&json!({
            "tenant": tenant, "runs_in_history": in_history, "loads": args.loads,
            "reloads": args.reloads, "target_p95_ms": args.target_p95_ms,
            "all_warm_p95": all.pct(95.0), "pages": rows, "over_target": over,
        }))?,
    )
    .context("writing summary.json")?;
    print!("{md}");
    Ok(())
}

/// Runs of the last 24 hours, by paging the list 500 at a time; and the pages read.
async fn count_runs<F, Fut>(get: &F) -> anyhow::Result<(u64, u64)>
where
    F: Fn(&str) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Value>>,
{
    let (mut runs, mut pages) = (0u64, 0u64);
    let mut token: Option<String> = None;
    loop {
        let path = match &token {
            Some(t) => format!("/v1/runs?limit=500&page_token={t}"),
            None => "/v1/runs?limit=500".to_owned(),
        };
        let page = get(&path).await?;
        pages += 1;
        runs += page["runs"].as_array().map_or(0, Vec::len) as u64;
        match page["next_page_token"].as_str() {
            Some(t) => token = Some(t.to_owned()),
            None => return Ok((runs, pages)),
        }
    }
}

async fn browser(webdriver: &str, chromium: &str) -> anyhow::Result<Client> {
    let mut caps = serde_json::Map::new();
    // Chromium ignores a page's navigations beyond 200 in 10 s (its guard against pages
    // that flood the browser); this benchmark navigates that fast, a person never does.
    caps.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": chromium,
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                     "--disable-dev-shm-usage", "--window-size=1366,900",
                     "--disable-ipc-flooding-protection"],
        }),
    );
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(webdriver)
        .await
        .with_context(|| format!("starting Chromium through chromedriver at {webdriver}"))
}

/// Warm and cold times of every page, in the order of `pages`.
async fn measure(
    c: &Client,
    api: &str,
    args: &ConsoleArgs,
    pages: &[Page],
) -> anyhow::Result<(Vec<Times>, Vec<Times>)> {
    // Longer than the pages' own 20 s limit, so a page that never draws is named.
    c.update_timeouts(fantoccini::wd::TimeoutConfiguration::new(
        Some(Duration::from_secs(60)),
        Some(Duration::from_secs(60)),
        None,
    ))
    .await?;
    c.goto(&format!("{api}/#/signin")).await?;
    c.execute(
        "sessionStorage.setItem('aiq.credential', JSON.stringify({kind: 'token', value: arguments[0]}));",
        vec![json!(args.token)],
    )
    .await?;
    let mut warm: Vec<Times> = pages.iter().map(|_| Times::default()).collect();
    let mut cold: Vec<Times> = pages.iter().map(|_| Times::default()).collect();
    for round in 0..args.reloads {
        for (i, p) in pages.iter().enumerate() {
            let fragment = &p.fragments[round % p.fragments.len()];
            c.goto("about:blank").await?;
            c.goto(&format!("{api}/{fragment}")).await?;
            let ms = number(c.execute_async(COLD, vec![]).await?, p.name, fragment)?;
            cold[i].push(ms);
        }
    }
    // The timed navigations start from a page drawn with its data.
    c.goto(&format!("{api}/#/workflows")).await?;
    number(
        c.execute_async(COLD, vec![]).await?,
        "Workflows",
        "#/workflows",
    )?;
    for round in 0..args.loads {
        for (i, p) in pages.iter().enumerate() {
            let fragment = &p.fragments[round % p.fragments.len()];
            let answer = c.execute_async(NAVIGATE, vec![json!(fragment)]).await?;
            let ms = match number(answer, p.name, fragment) {
                Ok(ms) => ms,
                Err(e) => {
                    let state = c
                        .execute(
                            "return {hash: location.hash, view: document.body.dataset.view, \
                             rendered: document.body.dataset.rendered, \
                             main: document.getElementById('main').innerText.slice(0, 400)}",
                            vec![],
                        )
                        .await
                        .unwrap_or_default();
                    bail!("{e}; the page: {state}");
                }
            };
            warm[i].push(ms);
        }
        if round % 10 == 9 {
            eprintln!("{} of {} rounds", round + 1, args.loads);
        }
    }
    Ok((warm, cold))
}

fn number(v: Value, page: &str, fragment: &str) -> anyhow::Result<f64> {
    match v.as_f64() {
        Some(ms) if ms >= 0.0 => Ok(ms),
        _ => bail!("{page} ({fragment}) was not drawn within 20 s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let mut t = Times::default();
        for ms in (1..=100).rev() {
            t.push(f64::from(ms));
        }
        assert_eq!(t.pct(50.0), 50.0);
        assert_eq!(t.pct(95.0), 95.0);
        assert_eq!(t.pct(100.0), 100.0);
        assert_eq!(t.max(), 100.0);
        assert!(Times::default().pct(95.0).is_nan());
    }
}
