"""Real clients against the gateway: the OpenAI Python SDK (chat, streaming chat with and
without stream_options.include_usage, embeddings, Responses API JSON and streamed) and the
Anthropic Python SDK (messages JSON and streamed).

Usage: sdk_clients.py BASE_URL MODEL RUN_ID [CACHED_TOKENS]

Prints one JSON line per call: the call, the x-request-id it sent, the API path, the model
the answer named and the usage as the SDK read it (input including cached input, output,
cached). The Rust test (tests/gateway/sdk.rs) checks Envoy's metrics and access log against
these lines. Any error fails the script.
"""

import json
import sys

import anthropic
import openai

base_url, model, run_id = sys.argv[1], sys.argv[2], sys.argv[3]
# Optional: prompt tokens llm-sim is to report as cached (header x-sim-cached-tokens).
extra = {"x-sim-cached-tokens": sys.argv[4]} if len(sys.argv) > 4 else {}
client = openai.OpenAI(base_url=f"{base_url}/v1", api_key="unused", max_retries=0, timeout=30,
                       default_headers=extra)
claude = anthropic.Anthropic(base_url=base_url, api_key="unused", max_retries=0, timeout=30,
                             default_headers=extra)
messages = [{"role": "user", "content": "Say this is a test of the token counters"}]


def report(call, path, answer_model, input_tokens, output_tokens, cached_tokens):
    print(json.dumps({
        "call": call,
        "request_id": f"{run_id}-{call}",
        "path": path,
        "model": answer_model,
        "usage": {"input": input_tokens, "output": output_tokens, "cached": cached_tokens or 0},
    }), flush=True)


def headers(call):
    return {"x-request-id": f"{run_id}-{call}"}


def cached(details):
    return getattr(details, "cached_tokens", 0) if details is not None else 0


chat = client.chat.completions.create(
    model=model, messages=messages, extra_headers=headers("chat"))
report("chat", "/v1/chat/completions", chat.model, chat.usage.prompt_tokens,
       chat.usage.completion_tokens, cached(chat.usage.prompt_tokens_details))

for call, options in [("chat_stream_include_usage", {"include_usage": True}),
                      ("chat_stream", None)]:
    extra = {"stream_options": options} if options else {}
    usage, answer_model, text = None, None, ""
    for chunk in client.chat.completions.create(
            model=model, messages=messages, stream=True, extra_headers=headers(call), **extra):
        answer_model = chunk.model
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            text += choice.delta.content or ""
    assert text, f"{call}: no content streamed"
    # Without include_usage, the usage chunk is the one the gateway asked for.
    assert usage is not None, f"{call}: no usage chunk"
    report(call, "/v1/chat/completions", answer_model, usage.prompt_tokens,
           usage.completion_tokens, cached(usage.prompt_tokens_details))

embedding = client.embeddings.create(
    model=model, input=["first text", "second text here"], encoding_format="float",
    extra_headers=headers("embeddings"))
assert len(embedding.data) == 2
report("embeddings", "/v1/embeddings", embedding.model, embedding.usage.prompt_tokens, 0, 0)

response = client.responses.create(
    model=model, input="Say this is a test", extra_headers=headers("responses"))
assert response.output_text
report("responses", "/v1/responses", response.model, response.usage.input_tokens,
       response.usage.output_tokens, cached(response.usage.input_tokens_details))

completed = None
for event in client.responses.create(
        model=model, input="Say this is a test", stream=True,
        extra_headers=headers("responses_stream")):
    if event.type == "response.completed":
        completed = event.response
assert completed is not None, "no response.completed event"
report("responses_stream", "/v1/responses", completed.model, completed.usage.input_tokens,
       completed.usage.output_tokens, cached(completed.usage.input_tokens_details))


def anthropic_input(usage):
    return (usage.input_tokens + (usage.cache_read_input_tokens or 0)
            + (usage.cache_creation_input_tokens or 0))


message = claude.messages.create(
    model=model, max_tokens=64, messages=messages, extra_headers=headers("messages"))
assert message.content[0].text
report("messages", "/v1/messages", message.model, anthropic_input(message.usage),
       message.usage.output_tokens, message.usage.cache_read_input_tokens)

start, output_tokens, text = None, None, ""
for event in claude.messages.create(
        model=model, max_tokens=64, messages=messages, stream=True,
        extra_headers=headers("messages_stream")):
    if event.type == "message_start":
        start = event.message
    elif event.type == "content_block_delta":
        text += event.delta.text
    elif event.type == "message_delta":
        output_tokens = event.usage.output_tokens
assert start is not None and output_tokens is not None and text
report("messages_stream", "/v1/messages", start.model, anthropic_input(start.usage),
       output_tokens, start.usage.cache_read_input_tokens)
