//! The generation thread. It owns the model and its one context (llama.cpp contexts are not
//! shared across threads) and serves one request at a time, in arrival order: a 135M model on
//! one core streams one answer well, and a second request waits its turn.
//!
//! Between requests the context keeps the tokens it has seen: an agent's next request repeats
//! its system prompt and history, so only the new suffix is decoded (the first token comes
//! sooner as a conversation grows).
//!
//! One thread computes: two spin-wait on each other when the machine is busy (ADR 31).

use crate::Error;
use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::model::{LlamaChatMessage, LlamaChatTemplate, LlamaModel};
use llama_cpp_2::sampling::LlamaSampler;
use llama_cpp_2::token::LlamaToken;
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::sync::OnceLock;
use tokio::sync::{mpsc, oneshot};

/// Tokens of context: prompt and answer together (the model was trained on 8k).
const CONTEXT: u32 = 4096;
/// Prompt tokens decoded per llama.cpp batch.
const BATCH: usize = 512;
/// Requests waiting for the thread beyond the one it serves; more are refused as busy.
const QUEUE: usize = 16;
/// Fewest answer tokens left after the prompt before a request is refused as too long.
const MIN_ANSWER: u32 = 32;

/// One chat message, its content already flattened to text.
#[derive(Debug, Clone)]
pub struct Message {
    pub role: String,
    pub content: String,
}

/// A request for one answer.
pub struct Job {
    pub messages: Vec<Message>,
    pub max_tokens: u32,
    pub temperature: f32,
    pub seed: u32,
    /// Where the answer goes; closing it (the client left) stops the generation.
    pub events: mpsc::Sender<Event>,
}

/// What the thread reports about a job, in order: `Started`, any `Text`, then `Done` or
/// `Failed`.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// The prompt is decoded; this many tokens it had.
    Started { prompt_tokens: u32 },
    /// The next piece of the answer (whole UTF-8 characters).
    Text(String),
    /// The answer ended.
    Done {
        completion_tokens: u32,
        finish: Finish,
    },
    /// The request could not be served (a person can read why).
    Failed(Refusal),
}

/// Why an answer ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finish {
    /// The model ended its turn.
    Stop,
    /// `max_tokens` (or the context) ran out.
    Length,
}

/// A request the engine cannot serve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The conversation does not fit the context even with its oldest messages dropped.
    TooLong(String),
    /// Too many requests already wait.
    Busy,
    /// llama.cpp failed.
    Internal(String),
}

/// The handle the HTTP side holds.
#[derive(Clone)]
pub struct Engine {
    jobs: mpsc::Sender<Job>,
}

impl Engine {
    /// Loads the model on a thread of its own and waits until it is ready.
    pub async fn start(gguf: PathBuf) -> Result<Self, Error> {
        let (jobs, queue) = mpsc::channel(QUEUE);
        let (ready, loaded) = oneshot::channel();
        let path = gguf.clone();
        std::thread::Builder::new()
            .name("warren-localmodel".into())
            .spawn(move || run(path, ready, queue))
            .map_err(|error| Error::Load {
                path: gguf.clone(),
                reason: error.to_string(),
            })?;
        match loaded.await {
            Ok(Ok(())) => Ok(Self { jobs }),
            Ok(Err(reason)) => Err(Error::Load { path: gguf, reason }),
            Err(_) => Err(Error::Load {
                path: gguf,
                reason: "the model thread ended while loading".into(),
            }),
        }
    }

    /// Queues a job; `Busy` when the queue is full.
    pub fn submit(&self, job: Job) -> Result<(), Refusal> {
        self.jobs.try_send(job).map_err(|error| match error {
            mpsc::error::TrySendError::Full(_) => Refusal::Busy,
            mpsc::error::TrySendError::Closed(_) => {
                Refusal::Internal("the local model has stopped".into())
            }
        })
    }
}

/// llama.cpp's global state: initialised once per process, its logs silenced (they would
/// flood `warren dev`'s terminal).
fn backend() -> Result<&'static LlamaBackend, String> {
    static BACKEND: OnceLock<Result<LlamaBackend, String>> = OnceLock::new();
    // One initialisation; every other caller waits for it and shares its outcome.
    BACKEND
        .get_or_init(|| {
            llama_cpp_2::send_logs_to_tracing(
                llama_cpp_2::LogOptions::default().with_logs_enabled(false),
            );
            LlamaBackend::init().map_err(|error| format!("llama.cpp did not start: {error}"))
        })
        .as_ref()
        .map_err(Clone::clone)
}

/// The thread's body: load, report, then serve jobs until every sender is gone.
fn run(path: PathBuf, ready: oneshot::Sender<Result<(), String>>, mut queue: mpsc::Receiver<Job>) {
    let loaded = (|| {
        let backend = backend()?;
        let model = LlamaModel::load_from_file(backend, &path, &LlamaModelParams::default())
            .map_err(|error| error.to_string())?;
        let template = model
            .chat_template(None)
            .map_err(|error| format!("no chat template in the model: {error}"))?;
        Ok::<_, String>((backend, model, template))
    })();
    let (backend, model, template) = match loaded {
        Ok(loaded) => loaded,
        Err(reason) => {
            let _ = ready.send(Err(reason));
            return;
        }
    };
    let params = LlamaContextParams::default()
        .with_n_ctx(NonZeroU32::new(CONTEXT))
        .with_n_batch(BATCH as u32)
        .with_n_threads(1)
        .with_n_threads_batch(1);
    let mut context = match model.new_context(backend, params) {
        Ok(context) => context,
        Err(error) => {
            let _ = ready.send(Err(error.to_string()));
            return;
        }
    };
    let _ = ready.send(Ok(()));
    let mut state = Generator {
        model: &model,
        template: &template,
        context: &mut context,
        cached: Vec::new(),
        logits_index: 0,
    };
    while let Some(job) = queue.blocking_recv() {
        let events = job.events.clone();
        if let Err(refusal) = state.answer(job) {
            let _ = events.blocking_send(Event::Failed(refusal));
        }
    }
}

/// The model, its context, and the tokens the context holds.
struct Generator<'m, 'c> {
    model: &'m LlamaModel,
    template: &'m LlamaChatTemplate,
    context: &'c mut LlamaContext<'m>,
    cached: Vec<LlamaToken>,
    /// Where in the last decoded batch the next token's logits are.
    logits_index: i32,
}

impl Generator<'_, '_> {
    fn answer(&mut self, job: Job) -> Result<(), Refusal> {
        let (prompt, max_tokens) = self.prompt(&job.messages, job.max_tokens)?;
        self.decode_prompt(&prompt)?;
        if job
            .events
            .blocking_send(Event::Started {
                prompt_tokens: prompt.len() as u32,
            })
            .is_err()
        {
            return Ok(());
        }
        let mut sampler = if job.temperature <= 0.0 {
            LlamaSampler::greedy()
        } else {
            LlamaSampler::chain_simple([
                LlamaSampler::top_k(40),
                LlamaSampler::top_p(0.95, 1),
                LlamaSampler::temp(job.temperature),
                LlamaSampler::dist(job.seed),
            ])
        };
        let vocab = self.model.vocab();
        let mut pending = Vec::new();
        let mut produced = 0;
        let mut batch = LlamaBatch::new(1, 1);
        let mut logits_at = self.logits_index;
        let finish = loop {
            if produced >= max_tokens {
                break Finish::Length;
            }
            let token = sampler.sample(self.context, logits_at);
            if vocab.is_eog(token) {
                break Finish::Stop;
            }
            produced += 1;
            pending.extend(vocab.token_to_piece(token, false, None));
            let text = take_utf8(&mut pending);
            if !text.is_empty() && job.events.blocking_send(Event::Text(text)).is_err() {
                // The client left: stop computing for no one.
                return Ok(());
            }
            batch.clear();
            batch
                .add(token, self.cached.len() as i32, &[0], true)
                .map_err(internal)?;
            self.context.decode(&mut batch).map_err(internal)?;
            self.cached.push(token);
            logits_at = 0;
        };
        if !pending.is_empty() {
            let rest = String::from_utf8_lossy(&pending).into_owned();
            let _ = job.events.blocking_send(Event::Text(rest));
        }
        let _ = job.events.blocking_send(Event::Done {
            completion_tokens: produced,
            finish,
        });
        Ok(())
    }

    /// The prompt's tokens and the answer's room: the oldest messages after the system prompt
    /// are dropped until both fit the context.
    fn prompt(
        &self,
        messages: &[Message],
        max_tokens: u32,
    ) -> Result<(Vec<LlamaToken>, u32), Refusal> {
        // A large `max_tokens` must not push the whole history out.
        let want = max_tokens.min(CONTEXT / 2);
        let mut kept: Vec<&Message> = messages.iter().collect();
        loop {
            let tokens = self.tokenize(&kept)?;
            let room = CONTEXT.saturating_sub(tokens.len() as u32);
            if room >= want {
                return Ok((tokens, want));
            }
            match kept.iter().position(|m| m.role != "system") {
                // Never the last message: it is the question.
                Some(oldest) if kept.len() - oldest > 1 => {
                    kept.remove(oldest);
                }
                _ if room >= MIN_ANSWER => return Ok((tokens, room)),
                _ => {
                    return Err(Refusal::TooLong(format!(
                        "the message is {} tokens long; the local model holds {CONTEXT} in all",
                        tokens.len()
                    )));
                }
            }
        }
    }

    fn tokenize(&self, messages: &[&Message]) -> Result<Vec<LlamaToken>, Refusal> {
        let chat = messages
            .iter()
            .map(|m| {
                LlamaChatMessage::new(m.role.clone(), m.content.clone())
                    .map_err(|_| Refusal::TooLong("a message holds a NUL character".into()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let text = self
            .model
            .apply_chat_template(self.template, &chat, true)
            .map_err(internal)?;
        Ok(self.model.vocab().tokenize(text.as_bytes(), true, true))
    }

    /// Decodes what the context does not hold yet; the last prompt token's logits are the
    /// first answer token's. At least one token is always decoded, for those logits.
    fn decode_prompt(&mut self, prompt: &[LlamaToken]) -> Result<(), Refusal> {
        let common = self
            .cached
            .iter()
            .zip(prompt)
            .take_while(|(a, b)| a == b)
            .count()
            .min(prompt.len().saturating_sub(1));
        self.context
            .clear_kv_cache_seq(Some(0), Some(common as u32), None)
            .map_err(internal)?;
        self.cached.truncate(common);
        let mut batch = LlamaBatch::new(BATCH, 1);
        for chunk in prompt[common..].chunks(BATCH) {
            batch.clear();
            for (i, token) in chunk.iter().enumerate() {
                let last = self.cached.len() + 1 == prompt.len();
                batch
                    .add(*token, self.cached.len() as i32, &[0], last)
                    .map_err(internal)?;
                self.cached.push(*token);
                if last {
                    self.logits_index = i as i32;
                }
            }
            if let Err(error) = self.context.decode(&mut batch) {
                // What the context holds is unknown now: start from scratch next time.
                self.context.clear_kv_cache();
                self.cached.clear();
                return Err(internal(error));
            }
        }
        Ok(())
    }
}

/// Takes the longest valid UTF-8 prefix out of `bytes` (a token can end mid-character).
fn take_utf8(bytes: &mut Vec<u8>) -> String {
    let valid = match std::str::from_utf8(bytes) {
        Ok(_) => bytes.len(),
        Err(error) if error.error_len().is_none() => error.valid_up_to(),
        // Not UTF-8 at all: pass it on lossily rather than hold it forever.
        Err(_) => bytes.len(),
    };
    let text = String::from_utf8_lossy(&bytes[..valid]).into_owned();
    bytes.drain(..valid);
    text
}

fn internal(error: impl std::fmt::Display) -> Refusal {
    Refusal::Internal(error.to_string())
}

#[cfg(test)]
mod tests {
    use super::take_utf8;

    #[test]
    fn a_character_split_across_tokens_is_held_until_whole() {
        let mut pending = "é".as_bytes()[..1].to_vec();
        assert_eq!(take_utf8(&mut pending), "");
        pending.extend(&"é".as_bytes()[1..]);
        pending.extend(b"t");
        assert_eq!(take_utf8(&mut pending), "ét");
        assert!(pending.is_empty());
    }
}
