//! The prompt as GIE's prefix-cache scorer sees it, built from the decoded strings the JSON
//! scanner hands over during its single pass, and its chain of block hashes.
//!
//! GIE v1.0.2 (`pkg/epp/util/request/body.go`) takes `messages` when the top-level object has
//! that key, else the `prompt` string. Each message whose `role` and `content` are both strings
//! becomes `<|im_start|>{role}\n{content}<|im_end|>\n`, in array order; any other message (array
//! `content` parts included) is skipped. Keys are read as Go's `encoding/json` reads them into a
//! map: exact names, and the last of duplicate keys wins, wherever it stands (`content` before
//! `role` gives the same text). A body whose `messages` is not an array, or whose `prompt` is not
//! a string, has no prompt here (GIE refuses it with 400; the filter routes it without prefix
//! affinity).
//!
//! Only the first `limit` bytes of that text are ever hashed (256 blocks of 64 bytes, 16 KiB),
//! so [`PromptTemplate`] keeps at most that much: the text so far, plus the message being read
//! (its role and content, each cut at what can still fit), at most three times `limit` bytes
//! whatever the body's size. The model starts the hash chain and may come after the messages,
//! hence the text is kept rather than hashed as it goes.

use super::config::DEFAULT_BLOCK_BYTES;
use super::xxhash::xxh64;

const START: &[u8] = b"<|im_start|>";
const END: &[u8] = b"<|im_end|>\n";

/// A string field of a message whose value the template needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    Role,
    Content,
}

/// Which top-level field the prompt comes from so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    None,
    /// The last `prompt` key's string.
    Prompt,
    /// The last `messages` key's array.
    Messages,
    /// The last `messages` or `prompt` value is not what GIE reads: no prompt (a later
    /// `messages` key may still give one).
    Invalid,
}

/// A value of one message field: `None` when absent, `Some(false)` when not a string.
#[derive(Debug, Default)]
struct FieldValue {
    seen: Option<bool>,
    text: Vec<u8>,
}

impl FieldValue {
    fn reset(&mut self) {
        self.seen = None;
        self.text.clear();
    }
}

/// The prompt text, built from scanner events; see the module docs.
#[derive(Debug)]
pub struct PromptTemplate {
    limit: usize,
    source: Source,
    /// Whether a `messages` key has been seen: it wins over `prompt` wherever either stands.
    messages_seen: bool,
    text: Vec<u8>,
    role: FieldValue,
    content: FieldValue,
    /// The string being captured, if any.
    capturing: Option<Capture>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Capture {
    Prompt,
    Field(Field),
}

impl PromptTemplate {
    /// A template keeping the first `limit` bytes of the prompt.
    pub fn new(limit: usize) -> Self {
        // The text and a message's content reach the limit on any long prompt: allocated at
        // once, they never grow by doubling, which would leave freed blocks behind in the
        // VM's linear memory (it never shrinks).
        Self {
            limit,
            source: Source::None,
            messages_seen: false,
            text: Vec::with_capacity(limit),
            role: FieldValue::default(),
            content: FieldValue {
                seen: None,
                text: Vec::with_capacity(limit),
            },
            capturing: None,
        }
    }

    /// A top-level `messages` key; `array` says whether its value is an array. The last such
    /// key decides, as in a Go map.
    pub fn messages(&mut self, array: bool) {
        self.messages_seen = true;
        self.text.clear();
        self.source = if array {
            Source::Messages
        } else {
            Source::Invalid
        };
    }

    /// A top-level `prompt` key; `string` says whether its value is a string, which the
    /// next [`PromptTemplate::push`]es then carry until [`PromptTemplate::end_string`].
    pub fn prompt(&mut self, string: bool) {
        if self.messages_seen {
            return;
        }
        self.text.clear();
        if string {
            self.source = Source::Prompt;
            self.capturing = Some(Capture::Prompt);
        } else {
            self.source = Source::Invalid;
        }
    }

    /// An object starts in the `messages` array.
    pub fn message_start(&mut self) {
        self.role.reset();
        self.content.reset();
    }

    /// A `role` or `content` key of a message; `string` says whether its value is a string,
    /// which the next pushes carry.
    pub fn field(&mut self, field: Field, string: bool) {
        let value = self.value(field);
        value.text.clear();
        value.seen = Some(string);
        if string {
            self.capturing = Some(Capture::Field(field));
        }
    }

    /// The end of the string being captured.
    pub fn end_string(&mut self) {
        self.capturing = None;
    }

    /// The message object ends: appended if its role and content are both strings.
    pub fn message_end(&mut self) {
        if self.source != Source::Messages
            || self.role.seen != Some(true)
            || self.content.seen != Some(true)
        {
            return;
        }
        for part in [
            START,
            &self.role.text[..],
            b"\n",
            &self.content.text[..],
            END,
        ] {
            let room = self.limit - self.text.len();
            self.text.extend_from_slice(&part[..part.len().min(room)]);
        }
    }

    /// Decoded bytes of the string being read; kept up to what can still reach the limit.
    #[inline]
    pub fn push(&mut self, bytes: &[u8]) {
        let Some(capture) = self.capturing else {
            return;
        };
        // The message's text goes after what the earlier messages wrote.
        let room = self.limit - self.text.len();
        let target = match capture {
            Capture::Prompt => &mut self.text,
            Capture::Field(field) => &mut self.value(field).text,
        };
        let room = match capture {
            Capture::Prompt => room,
            Capture::Field(_) => room.saturating_sub(target.len()),
        };
        target.extend_from_slice(&bytes[..bytes.len().min(room)]);
    }

    fn value(&mut self, field: Field) -> &mut FieldValue {
        match field {
            Field::Role => &mut self.role,
            Field::Content => &mut self.content,
        }
    }

    /// The prompt's first `limit` bytes, if the body has a prompt GIE reads.
    pub fn finish(self) -> Option<Vec<u8>> {
        matches!(self.source, Source::Prompt | Source::Messages).then_some(self.text)
    }
}

/// The block hashes of `prompt` for `model`, exactly as GIE v1.0.2's `hashPrompt`
/// (`plugins/multi/prefix/plugin.go`) computes them: the prompt cut to `max_blocks` blocks of
/// `block` bytes, a trailing partial block dropped, h0 = XXH64(model ‖ block 0) and
/// h_i = XXH64(block_i ‖ LE64(h_{i-1})).
///
/// With one twist of GIE's Go: the block is a slice of the prompt and `append` writes the
/// previous hash into the prompt's own array, just past the block, so from the third block on
/// a block's first 8 bytes are LE64(h_{i-2}) instead of the prompt's bytes. Reproduced here,
/// so the hashes are GIE's own (checked against its code, see the tests).
pub fn block_hashes(model: &[u8], prompt: &[u8], block: usize, max_blocks: usize) -> Vec<u64> {
    let prompt = &prompt[..prompt.len().min(block * max_blocks)];
    let count = prompt.len() / block;
    let mut hashes = Vec::with_capacity(count);
    if count == 0 {
        return hashes;
    }
    let mut first = Vec::with_capacity(model.len() + block);
    first.extend_from_slice(model);
    first.extend_from_slice(&prompt[..block]);
    hashes.push(xxh64(&first));
    // The default block size gets a buffer of constant size: its copies and the hash over it
    // compile to straight loads and stores, where a copy of run-time length is a call out of
    // the VM to memmove, once per block.
    if block == DEFAULT_BLOCK_BYTES {
        chain(prompt, &mut [0; DEFAULT_BLOCK_BYTES + 8], &mut hashes);
    } else {
        chain(prompt, &mut vec![0; block + 8], &mut hashes);
    }
    hashes
}

/// Hashes blocks 1.. of `prompt` into `hashes` (which holds block 0's), through `buffer`: a
/// block and a hash.
#[inline(always)]
fn chain(prompt: &[u8], buffer: &mut [u8], hashes: &mut Vec<u64>) {
    let block = buffer.len() - 8;
    for index in 1..prompt.len() / block {
        buffer[..block].copy_from_slice(&prompt[index * block..(index + 1) * block]);
        if index >= 2 && block >= 8 {
            buffer[..8].copy_from_slice(&hashes[index - 2].to_le_bytes());
        }
        buffer[block..].copy_from_slice(&hashes[index - 1].to_le_bytes());
        hashes.push(xxh64(buffer));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds a template the events the scanner would give for `messages`: each message a
    /// list of (field, Some(text) for a string, None for another value).
    fn chat(messages: &[&[(Field, Option<&str>)]], limit: usize) -> Option<Vec<u8>> {
        let mut template = PromptTemplate::new(limit);
        template.messages(true);
        for message in messages {
            template.message_start();
            for (field, value) in message.iter() {
                template.field(*field, value.is_some());
                if let Some(text) = value {
                    for byte in text.as_bytes() {
                        template.push(std::slice::from_ref(byte));
                    }
                    template.end_string();
                }
            }
            template.message_end();
        }
        template.finish()
    }

    fn text(prompt: Option<Vec<u8>>) -> String {
        String::from_utf8(prompt.expect("a prompt")).unwrap()
    }

    #[test]
    fn messages_follow_the_chat_template_in_any_field_order() {
        use Field::{Content, Role};
        let ordered = chat(
            &[
                &[(Role, Some("system")), (Content, Some("Be brief."))],
                &[(Content, Some("Hi")), (Role, Some("user"))],
            ],
            1 << 14,
        );
        assert_eq!(
            text(ordered),
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
        );
    }

    #[test]
    fn messages_without_string_role_and_content_are_skipped() {
        use Field::{Content, Role};
        let prompt = chat(
            &[
                &[(Role, Some("user")), (Content, None)],
                &[(Role, None), (Content, Some("x"))],
                &[(Content, Some("no role"))],
                &[(Role, Some("user")), (Content, Some("kept"))],
                // The last of duplicate keys wins, as in a Go map.
                &[(Role, Some("user")), (Content, Some("a")), (Content, None)],
                &[
                    (Role, Some("old")),
                    (Content, None),
                    (Content, Some("b")),
                    (Role, Some("new")),
                ],
            ],
            1 << 14,
        );
        assert_eq!(
            text(prompt),
            "<|im_start|>user\nkept<|im_end|>\n<|im_start|>new\nb<|im_end|>\n"
        );
    }

    #[test]
    fn only_the_first_limit_bytes_are_kept() {
        use Field::{Content, Role};
        let long = "x".repeat(100);
        let prompt = chat(
            &[
                &[(Content, Some(&long)), (Role, Some("user"))],
                &[(Role, Some("user")), (Content, Some("more"))],
            ],
            40,
        );
        let full = format!("<|im_start|>user\n{long}<|im_end|>\n");
        assert_eq!(text(prompt), full[..40]);
    }

    #[test]
    fn messages_win_over_prompt_and_the_last_key_decides() {
        let mut template = PromptTemplate::new(100);
        template.prompt(true);
        template.push(b"completion");
        template.end_string();
        assert_eq!(text(template.finish()), "completion");

        let mut template = PromptTemplate::new(100);
        template.prompt(true);
        template.push(b"ignored");
        template.end_string();
        template.messages(true);
        template.prompt(true);
        template.push(b"ignored too");
        template.end_string();
        assert_eq!(text(template.finish()), "");

        let mut template = PromptTemplate::new(100);
        template.messages(true);
        template.messages(false);
        assert_eq!(template.finish(), None);

        let mut template = PromptTemplate::new(100);
        template.prompt(false);
        assert_eq!(template.finish(), None);
        assert_eq!(PromptTemplate::new(100).finish(), None);
    }

    #[test]
    fn blocks_hash_as_gie_does() {
        // Vectors from GIE v1.0.2's own prefix plugin (Score, then the cycle state's
        // PrefixHashes) on a body whose prompt is ten distinct 64-byte blocks and model "m".
        let prompt: String = (0..10)
            .map(|i| {
                format!("block {i:02}: the quick brown fox jumps over the lazy dog!!!!!!!!!!!!!")
                    [..64]
                    .to_owned()
            })
            .collect();
        let hashes = block_hashes(b"m", prompt.as_bytes(), 64, 256);
        assert_eq!(hashes.len(), 10);
        assert_eq!(hashes[0], 0x4d7b_7099_e0cb_1f49);
        assert_eq!(hashes[1], 0x8e61_fb0f_b6e3_4940);
        assert_eq!(hashes[2], 0xb216_8c58_fc24_a3dc);
        assert_eq!(hashes[9], 0x7b1a_0449_e44d_fc7f);
        // Shorter than a block: no hashes; the partial tail and anything past the limit count
        // for nothing.
        assert!(block_hashes(b"m", &prompt.as_bytes()[..63], 64, 256).is_empty());
        assert_eq!(
            block_hashes(b"m", &prompt.as_bytes()[..639], 64, 256),
            hashes[..9]
        );
        assert_eq!(block_hashes(b"m", prompt.as_bytes(), 64, 4), hashes[..4]);
        // The model starts the chain.
        assert_ne!(block_hashes(b"n", prompt.as_bytes(), 64, 256)[0], hashes[0]);
    }

    #[test]
    fn every_block_size_chains_as_specified() {
        // The chain as documented, block by block, for the constant-size default and the
        // run-time sizes alike.
        let prompt: Vec<u8> = (0..2_000u32).map(|i| (i * 7 % 251) as u8).collect();
        for block in [8, 24, 64, 100, 256] {
            let mut expected: Vec<u64> = Vec::new();
            for (index, bytes) in prompt.chunks_exact(block).take(16).enumerate() {
                let mut input = if index == 0 {
                    b"m".to_vec()
                } else {
                    Vec::new()
                };
                input.extend_from_slice(bytes);
                if index >= 2 {
                    input[..8].copy_from_slice(&expected[index - 2].to_le_bytes());
                }
                if index >= 1 {
                    input.extend_from_slice(&expected[index - 1].to_le_bytes());
                }
                expected.push(xxh64(&input));
            }
            assert_eq!(block_hashes(b"m", &prompt, block, 16), expected, "{block}");
        }
    }
}
