"""The OpenAI Python SDK against the gateway, as a user would call it; prints what it got as
JSON for tests/gateway/openai_sdk.rs to check (this script asserts nothing itself).

    python openai_sdk.py BASE_URL TAG models
    python openai_sdk.py BASE_URL TAG audio AUDIO_FILE MODEL
"""

import json
import sys

import openai


def main() -> None:
    base_url, tag, command = sys.argv[1:4]
    client = openai.OpenAI(
        base_url=base_url + "/v1",
        api_key="unused",
        default_headers={"x-test-tag": tag},
        max_retries=0,
    )
    out = {"sdk": openai.__version__}
    if command == "models":
        page = client.models.list()
        out["list"] = [model.model_dump() for model in page.data]
        # The SDK percent-encodes the id: '/' travels as %2F.
        out["retrieved"] = [
            client.models.retrieve(model.id).model_dump() for model in page.data
        ]
        out["alias"] = client.models.retrieve("gpt-4o").model_dump()
        try:
            client.models.retrieve("gpt-5")
            out["unknown"] = "answered"
        except openai.NotFoundError as error:
            out["unknown"] = {"status": error.status_code, "body": error.body}
    elif command == "audio":
        path, model = sys.argv[4:6]
        with open(path, "rb") as audio:
            out["transcription"] = client.audio.transcriptions.create(
                model=model, file=audio, language="en"
            ).model_dump()
        with open(path, "rb") as audio:
            out["translation"] = client.audio.translations.create(
                model=model, file=audio
            ).model_dump()
        with open(path, "rb") as audio:
            out["text"] = client.audio.transcriptions.create(
                model=model, file=audio, response_format="text"
            )
    else:
        raise SystemExit(f"unknown command {command}")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
