"""The KServe Python SDK's REST inference client, unmodified, against a running `modelyard serve`: every call it
makes over the Open Inference Protocol (v2), each checked against the model's own answers.

Runs in the virtual environment `scripts/test-kserve.sh` makes for kserve (whose pins conflict with modelyard's),
so it imports nothing of modelyard: the expected answers come in a JSON file written by the main environment.

    python scripts/kserve_check.py --url http://127.0.0.1:PORT --key KEY --model digits --version 1 \
        --expected expected.json

Prints one line per call and `kserve: N of N calls pass`; exits 1 if any fails.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import traceback

import httpx
import numpy as np
from kserve import InferenceRESTClient, InferInput, InferRequest, RESTConfig
from kserve.protocol.infer_type import RequestedOutput


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--url", required=True, help="the server, e.g. http://127.0.0.1:8000")
    p.add_argument("--key", required=True, help="an API key for the server")
    p.add_argument("--model", required=True, help="the served model's name")
    p.add_argument("--version", required=True, help="the served model's version")
    p.add_argument("--expected", required=True, help="JSON: inputs x, probabilities and labels the model answers")
    return p.parse_args()


class Check:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        expected = json.loads(open(args.expected).read())
        self.x = np.asarray(expected["x"], dtype=np.float32)  # (N, H, W)
        self.prob = np.asarray(expected["probabilities"], dtype=np.float32)  # (N, C)
        self.labels = list(expected["labels"])
        self.client = InferenceRESTClient(RESTConfig(protocol="v2", timeout=30))

    def headers(self) -> dict:
        return {"Authorization": f"Bearer {self.args.key}"}  # a fresh dict: the client writes into it

    def request(self, *, binary_in: bool, binary_out: bool | None, request_id: str) -> InferRequest:
        inp = InferInput(name="input", shape=list(self.x.shape), datatype="FP32")
        inp.set_data_from_numpy(self.x, binary_data=binary_in)
        outputs = None
        if binary_out is not None:  # per output; otherwise JSON answers by default
            outputs = [RequestedOutput(name, parameters={"binary_data": binary_out})
                       for name in ("probabilities", "label")]
        return InferRequest(model_name=self.args.model, infer_inputs=[inp], request_id=request_id,
                            request_outputs=outputs)

    def answers_match(self, response, request_id: str) -> None:
        outputs = {o.name: o for o in response.outputs}
        prob = np.asarray(outputs["probabilities"].as_numpy(), dtype=np.float32).reshape(self.prob.shape)
        assert np.allclose(prob, self.prob, atol=1e-6), f"probabilities differ: {prob} vs {self.prob}"
        labels = [v.decode() if isinstance(v, bytes) else v for v in outputs["label"].as_numpy().reshape(-1)]
        assert labels == self.labels, f"labels {labels} != {self.labels}"
        assert response.id == request_id, f"response id {response.id!r} != request id {request_id!r}"

    async def infer(self, *, binary_in: bool, binary_out: bool | None, request_id: str) -> None:
        req = self.request(binary_in=binary_in, binary_out=binary_out, request_id=request_id)
        seen: dict = {}
        response = await self.client.infer(self.args.url, req, model_name=self.args.model, headers=self.headers(),
                                           response_headers=seen)
        binary = "inference-header-content-length" in {k.lower() for k in seen}
        assert binary == bool(binary_out), f"asked for {'binary' if binary_out else 'JSON'}, got the other"
        self.answers_match(response, request_id)

    async def infer_all_binary_outputs(self) -> None:
        """`binary_data_output` for the whole request, answered as binary tensor data."""
        req = self.request(binary_in=False, binary_out=None, request_id="all-binary")
        req.parameters = {"binary_data_output": True}
        seen: dict = {}
        response = await self.client.infer(self.args.url, req, model_name=self.args.model, headers=self.headers(),
                                           response_headers=seen)
        assert "inference-header-content-length" in {k.lower() for k in seen}, "the answer was not binary"
        self.answers_match(response, "all-binary")

    async def infer_dict(self) -> None:
        body = {"id": "plain-dict", "inputs": [{"name": "input", "shape": list(self.x.shape), "datatype": "FP32",
                                                "data": self.x.reshape(-1).tolist()}]}
        response = await self.client.infer(self.args.url, body, model_name=self.args.model, headers=self.headers())
        self.answers_match(response, "plain-dict")

    async def infer_version(self) -> None:
        """The versioned infer route, through the client's full-URL mode (it builds no versioned URL itself)."""
        url = f"{self.args.url}/v2/models/{self.args.model}/versions/{self.args.version}/infer"
        body = {"id": "versioned", "inputs": [{"name": "input", "shape": list(self.x.shape), "datatype": "FP32",
                                               "data": self.x.reshape(-1).tolist()}]}
        answer = await self.client.infer(url, body, headers=self.headers(), is_graph_endpoint=True)
        assert answer["model_version"] == self.args.version and answer["id"] == "versioned", answer
        prob = np.asarray(answer["outputs"][0]["data"], dtype=np.float32).reshape(self.prob.shape)
        assert np.allclose(prob, self.prob, atol=1e-6)

    async def infer_unknown_model(self) -> None:
        req = self.request(binary_in=False, binary_out=None, request_id="nope")
        try:
            await self.client.infer(self.args.url, req, model_name="no-such-model", headers=self.headers())
        except httpx.HTTPStatusError as exc:
            assert exc.response.status_code == 404 and "no-such-model" in str(exc), str(exc)
            return
        raise AssertionError("an unknown model was answered")

    async def infer_without_key(self) -> None:
        req = self.request(binary_in=True, binary_out=None, request_id="no-key")
        try:
            await self.client.infer(self.args.url, req, model_name=self.args.model)
        except httpx.HTTPStatusError as exc:
            assert exc.response.status_code == 401 and "API key" in str(exc), str(exc)
            return
        raise AssertionError("a request without a key was answered")

    def calls(self) -> list[tuple[str, object]]:
        c, url, model = self.client, self.args.url, self.args.model

        async def expect(coro, value, what):
            got = await coro
            assert got is value, f"{what}: {got!r}"

        calls = [
            ("is_server_live", lambda: expect(c.is_server_live(url), True, "live")),
            ("is_server_ready", lambda: expect(c.is_server_ready(url), True, "ready")),
            ("is_model_ready", lambda: expect(c.is_model_ready(url, model, headers=self.headers()), True, "ready")),
            ("is_model_ready (unknown model: False)",
             lambda: expect(c.is_model_ready(url, "no-such-model", headers=self.headers()), False, "ready")),
        ]
        for binary_in in (False, True):
            for binary_out in (None, False, True):
                name = (f"infer ({'binary' if binary_in else 'JSON'} inputs, "
                        f"{'default' if binary_out is None else 'binary' if binary_out else 'JSON'} outputs)")
                calls.append((name, lambda i=binary_in, o=binary_out, n=name: self.infer(
                    binary_in=i, binary_out=o, request_id=f"id-{n}")))
        calls += [
            ("infer (binary_data_output for every output)", self.infer_all_binary_outputs),
            ("infer (a plain dict)", self.infer_dict),
            ("infer (versioned route, full URL)", self.infer_version),
            ("infer (unknown model: 404 with the reason)", self.infer_unknown_model),
            ("infer (no key: 401 with the reason)", self.infer_without_key),
        ]
        return calls

    async def run(self) -> int:
        passed, calls = 0, self.calls()
        for name, call in calls:
            try:
                await call()
            except Exception as exc:  # noqa: BLE001  (report every call, then fail)
                print(f"FAIL {name}: {exc.__class__.__name__}: {exc}")
                traceback.print_exc(limit=3)
            else:
                passed += 1
                print(f"pass {name}")
        await self.client.close()
        print(f"kserve: {passed} of {len(calls)} calls pass")
        return 0 if passed == len(calls) else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(Check(parse_args()).run()))
