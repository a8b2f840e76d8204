//! What an answer says, the same way for every API: the prompt's words echoed back as tokens
//! (one word per token), and the usage a backend reports for it.

use serde_json::Value;

/// Words between spaces (any byte up to b' ': ASCII whitespace and control characters): word
/// starts counted in runs of 255 bytes with a byte counter, which the compiler vectorises 16
/// bytes at a time. Decoding chars (`split_whitespace`) was most of the simulator's time on a
/// 1 MiB prompt, and the benchmark's backend must cost less than the gateway in front of it.
fn word_count(bytes: &[u8]) -> usize {
    let starts = |byte: &u8, before: &u8| u8::from(*byte > b' ' && *before <= b' ');
    let first = bytes
        .first()
        .map_or(0, |byte| usize::from(starts(byte, &b' ')));
    let (after, before) = match bytes.len() {
        0 => (bytes, bytes),
        len => (&bytes[1..], &bytes[..len - 1]),
    };
    let rest: usize = after
        .chunks(255)
        .zip(before.chunks(255))
        .map(|(after, before)| {
            let run: u8 = after.iter().zip(before).map(|(b, p)| starts(b, p)).sum();
            usize::from(run)
        })
        .sum();
    first + rest
}

/// A request's answer, before any API shapes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub tokens: Vec<String>,
    pub prompt_tokens: u64,
    /// Prompt tokens read from a prompt cache, when the request asked for some (header
    /// [`crate::CACHED_TOKENS_HEADER`]).
    pub cached_tokens: Option<u64>,
}

impl Answer {
    /// Echoes `prompt`: its words as tokens, repeated up to the request's `min_tokens`
    /// (vLLM's sampling parameter) and cut at `max_tokens` (or the API's own limit field).
    pub fn echo(prompt: &str, request: &Value, cached: Option<u64>) -> Self {
        let max_tokens = ["max_completion_tokens", "max_tokens", "max_output_tokens"]
            .iter()
            .find_map(|field| request[*field].as_u64())
            .unwrap_or(u64::MAX)
            .max(1) as usize;
        let min_tokens = request["min_tokens"].as_u64().unwrap_or(0) as usize;
        // Only the words answered are copied: a 1 MiB prompt answered with one token costs
        // one pass over it, not an allocation per word.
        let words = prompt.split_inclusive(' ');
        let tokens: Vec<String> = if min_tokens > 0 && words.clone().count() < min_tokens {
            let cycle: Vec<&str> = words.collect();
            let cycle = if cycle.is_empty() {
                vec!["token "]
            } else {
                cycle
            };
            cycle
                .iter()
                .cycle()
                .take(min_tokens.min(max_tokens))
                .map(|word| format!("{} ", word.trim_end()))
                .collect()
        } else {
            words.take(max_tokens).map(str::to_owned).collect()
        };
        let prompt_tokens = word_count(prompt.as_bytes()).max(1) as u64;
        Self {
            tokens,
            prompt_tokens,
            cached_tokens: cached.map(|c| c.min(prompt_tokens)),
        }
    }

    pub fn text(&self) -> String {
        self.tokens.concat()
    }

    pub fn completion_tokens(&self) -> u64 {
        self.tokens.len() as u64
    }

    /// OpenAI chat and completions usage.
    pub fn openai_usage(&self) -> Value {
        let mut usage = serde_json::json!({
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens(),
            "total_tokens": self.prompt_tokens + self.completion_tokens(),
        });
        if let Some(cached) = self.cached_tokens {
            usage["prompt_tokens_details"] = serde_json::json!({ "cached_tokens": cached });
        }
        usage
    }

    /// Responses API usage.
    pub fn responses_usage(&self) -> Value {
        serde_json::json!({
            "input_tokens": self.prompt_tokens,
            "input_tokens_details": { "cached_tokens": self.cached_tokens.unwrap_or(0) },
            "output_tokens": self.completion_tokens(),
            "output_tokens_details": { "reasoning_tokens": 0 },
            "total_tokens": self.prompt_tokens + self.completion_tokens(),
        })
    }

    /// Anthropic usage: its `input_tokens` leave out cache reads.
    pub fn anthropic_usage(&self, output_tokens: u64) -> Value {
        let cached = self.cached_tokens.unwrap_or(0);
        serde_json::json!({
            "input_tokens": self.prompt_tokens - cached,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": cached,
            "output_tokens": output_tokens,
        })
    }
}

/// The text of an OpenAI or Anthropic message content: a string, or its text parts.
pub fn content_text(content: &Value) -> String {
    match content {
        Value::String(text) => text.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|part| part["text"].as_str())
            .collect::<Vec<_>>()
            .join(" "),
        _ => String::new(),
    }
}

/// The text a request asks to be answered: the last message (`messages`, or the Responses
/// API's `input` list), or the prompt or input string.
pub fn prompt_text(request: &Value) -> String {
    let last_message = |messages: &Value| {
        messages
            .as_array()
            .and_then(|messages| messages.last())
            .map(|message| content_text(&message["content"]))
    };
    if let Some(text) = last_message(&request["messages"]) {
        return text;
    }
    match &request["input"] {
        Value::String(text) => return text.clone(),
        input @ Value::Array(_) => return last_message(input).unwrap_or_default(),
        _ => {}
    }
    content_text(&request["prompt"])
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn prompts_are_found_in_every_api() {
        let chat = json!({"messages": [
            {"role": "user", "content": "first"},
            {"role": "user", "content": [{"type": "text", "text": "Say"}, {"type": "image_url"}, {"type": "text", "text": "this"}]}
        ]});
        assert_eq!(prompt_text(&chat), "Say this");
        assert_eq!(prompt_text(&json!({"prompt": "a b"})), "a b");
        assert_eq!(prompt_text(&json!({"input": "c d"})), "c d");
        assert_eq!(
            prompt_text(
                &json!({"input": [{"role": "user", "content": [{"type": "input_text", "text": "e"}]}]})
            ),
            "e"
        );
        assert_eq!(prompt_text(&json!({})), "");
    }

    #[test]
    fn answers_echo_the_prompt_within_the_token_limits() {
        let answer = Answer::echo("one two three", &json!({}), None);
        assert_eq!(answer.tokens, ["one ", "two ", "three"]);
        assert_eq!(answer.prompt_tokens, 3);
        let answer = Answer::echo("one two three", &json!({"max_tokens": 2}), Some(9));
        assert_eq!(answer.text(), "one two ");
        assert_eq!(answer.cached_tokens, Some(3));
        let answer = Answer::echo("a b", &json!({"min_tokens": 5, "max_tokens": 4}), None);
        assert_eq!(answer.tokens, ["a ", "b ", "a ", "b "]);
        let answer = Answer::echo("", &json!({"min_tokens": 3}), None);
        assert_eq!(answer.completion_tokens(), 3);
        assert_eq!(answer.anthropic_usage(3)["input_tokens"], 1);
    }

    #[test]
    fn words_are_counted_between_spaces_across_runs() {
        for text in [
            "",
            "  ",
            "a",
            " a b  c ",
            "h\u{e9}llo w\u{f6}rld\tfoo\nbar\r\n",
        ] {
            assert_eq!(
                word_count(text.as_bytes()),
                text.split_whitespace().count(),
                "{text:?}"
            );
        }
        // Words straddling the 255-byte runs the counter adds up separately.
        let long: String = (0..2_000)
            .map(|i| if i % 7 == 0 { ' ' } else { 'x' })
            .collect();
        assert_eq!(word_count(long.as_bytes()), long.split_whitespace().count());
    }
}
