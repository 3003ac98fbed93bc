"""The tutorial through the real anthropic client against a local fake server, and offline."""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from model.tutorial import TutorialConfig, group_parameters, offline_tutorial, write_tutorial

PARAMS = [
    {"name": "osc_1_on", "text": "On"}, {"name": "osc_1_level", "text": "0.700000"},
    {"name": "osc_1_wave_frame", "text": "128.000000"},
    {"name": "osc_2_on", "text": "Off"}, {"name": "osc_2_level", "text": "0.300000"},
    {"name": "filter_1_cutoff", "text": "12.000000 semitones"},
    {"name": "env_1_attack", "text": "0.012000 secs"}, {"name": "volume", "text": "-9.0dB"},
]
MODULES = {"osc_1_on": "osc_1", "osc_1_level": "osc_1", "osc_1_wave_frame": "osc_1",
           "osc_2_on": "osc_2", "osc_2_level": "osc_2", "filter_1_cutoff": "filter_1",
           "env_1_attack": "env_1", "volume": "global"}


class FakeAnthropic(BaseHTTPRequestHandler):
    requests: list = []
    status = 200

    def do_POST(self):  # noqa: N802 (http.server's naming)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).requests.append({"path": self.path, "body": body,
                                    "key": self.headers.get("x-api-key") or
                                    self.headers.get("authorization")})
        if type(self).status != 200:
            self.send_response(type(self).status)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(json.dumps({"type": "error", "error": {
                "type": "api_error", "message": "boom"}}).encode())
            return
        reply = {"id": "msg_1", "type": "message", "role": "assistant", "model": body["model"],
                 "content": [{"type": "text", "text": "1. Load the init preset.\n2. Turn the "
                                                      "filter cutoff to 12 semitones."}],
                 "stop_reason": "end_turn", "stop_sequence": None,
                 "usage": {"input_tokens": 10, "output_tokens": 20}}
        data = json.dumps(reply).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def fake_server():
    FakeAnthropic.requests, FakeAnthropic.status = [], 200
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeAnthropic)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_grouping_follows_vitals_sections_and_drops_switched_off_modules():
    groups = group_parameters(PARAMS, MODULES)
    titles = [t for t, _ in groups]
    assert titles == ["Oscillator 1 (OSC 1)", "Filter 1",
                      "Envelope 1: the amplitude envelope (ENV 1)", "Master"]
    text = offline_tutorial(groups, note=60)
    assert "filter 1 cutoff = 12.000000 semitones" in text and "osc 2 level" not in text
    assert text.splitlines()[0].startswith("1. In Vital, load the init preset")
    assert "MIDI note 60" in text.splitlines()[-1]


def test_claude_through_the_real_client(fake_server, monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-test")
    tut = write_tutorial(PARAMS, MODULES, note=60, description="a soft pad",
                         config=TutorialConfig(model="claude-test", max_retries=0),
                         base_url=fake_server)
    assert tut.source == "claude" and "12 semitones" in tut.text
    (req,) = FakeAnthropic.requests
    assert req["path"] == "/v1/messages" and "sk-test" in req["key"]
    assert req["body"]["model"] == "claude-test"
    prompt = req["body"]["messages"][0]["content"]
    assert "a soft pad" in prompt and "filter 1 cutoff: 12.000000 semitones" in prompt
    assert "osc 2 level" not in prompt


def test_offline_when_the_call_fails_or_there_is_no_key(fake_server, monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-test")
    FakeAnthropic.status = 500
    tut = write_tutorial(PARAMS, MODULES, config=TutorialConfig(max_retries=1),
                         base_url=fake_server)
    assert tut.source == "offline" and "InternalServerError" in tut.note
    assert len(FakeAnthropic.requests) == 2  # one retry, then the fallback
    assert "filter 1 cutoff = 12.000000 semitones" in tut.text
    monkeypatch.delenv("ANTHROPIC_API_KEY")
    tut = write_tutorial(PARAMS, MODULES)
    assert (tut.source, tut.note) == ("offline", "no ANTHROPIC_API_KEY set")
