"""The Serve app on a real local Ray, over real HTTP on 127.0.0.1, with the shipped model.

One Ray and one Serve instance for the module; tests that need another configuration
redeploy the app (only the changed deployments restart) and put the default back.
The demo is driven in Debian's headless Chromium through Selenium.
"""

import base64
import io
import json
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import requests
import soundfile as sf
import yaml
from conftest import free_port, sampled_clip_wav

from synth import Renderer, get_space, parse_preset
from synth.config import ConfigError

SR = 44100
TOKEN_ENV = "SYNTHMATCH_TEST_TOKEN"
TOKEN = "test-token-3f9a"


def _deploy(serve, config: dict) -> None:
    from serve.app import build_app

    serve.run(build_app(config), name="synthmatch", route_prefix="/", blocking=False)


@pytest.fixture(scope="module")
def server():
    import ray
    from ray import serve

    os.environ[TOKEN_ENV] = TOKEN  # inherited by the Ray workers started below
    # the replicas' logs stay in Ray's log files rather than in pytest's progress output
    ray.init(num_cpus=3, include_dashboard=False, log_to_driver=False)
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    base = f"http://127.0.0.1:{port}"
    # what a client sees while the app deploys: polled from before the deploy starts
    with ThreadPoolExecutor(1) as pool:
        seen = pool.submit(_poll_until_healthy, base)
        _deploy(serve, {})
        STARTUP.extend(seen.result())
    yield base, serve
    serve.shutdown()
    ray.shutdown()
    os.environ.pop(TOKEN_ENV, None)


STARTUP: list[tuple] = []  # (status, headers, JSON body) seen


def _poll_until_healthy(base: str, timeout: float = 180.0) -> list:
    """GET /healthz every 0.2 s until it answers 200; every answer, in order."""
    seen, end = [], time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            r = requests.get(f"{base}/healthz", timeout=30)
        except requests.ConnectionError:
            time.sleep(0.2)
            continue
        body = r.json() if "json" in r.headers.get("content-type", "") else None
        seen.append((r.status_code, r.headers.copy(), body))  # case-insensitive keys
        if r.status_code == 200:
            return seen
        time.sleep(0.2)
    raise AssertionError(f"{base}/healthz did not answer 200 within {timeout} s: "
                         f"{[s for s, _, _ in seen][-10:]}")


def test_requests_while_the_app_starts_are_answered_503_with_retry_after(server):
    statuses = [status for status, _, _ in STARTUP]
    assert statuses[-1] == 200
    # Serve's proxy says 404 until the app's route exists; from then on, the app's own
    # 503s until every deployment is ready, and no request waits for a replica
    starting = [(h, b) for status, h, b in STARTUP if status == 503]
    assert starting, statuses
    assert set(statuses[statuses.index(503):]) == {503, 200}, statuses
    for headers, body in starting:
        assert int(headers["Retry-After"]) > 0
        assert body["error"]["code"] == "starting" and "retry" in body["error"]["message"]


@pytest.fixture(scope="module")
def clip_wav() -> bytes:
    return sampled_clip_wav()


def _wav(audio: np.ndarray, sr: int = SR) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, audio, sr, format="WAV")
    return buf.getvalue()


def _error(resp, status: int, code: str, words: str = "") -> dict:
    assert resp.status_code == status, (resp.status_code, resp.text[:500])
    body = resp.json()
    assert set(body) == {"error"} and set(body["error"]) == {"status", "code", "message"}
    assert body["error"]["status"] == status and body["error"]["code"] == code, body
    assert words.lower() in body["error"]["message"].lower(), body
    return body


def test_health_info_and_docs(server):
    base, _ = server
    assert requests.get(f"{base}/healthz").json()["status"] == "ok"
    info = requests.get(f"{base}/v1/info").json()
    assert info["model"]["space_id"] == get_space("core").id
    assert info["model"]["scope"] == "core" and info["model"]["parameters"] == 92
    assert info["limits"]["max_upload_mb"] == 20 and info["auth"] is False
    cross = requests.get(f"{base}/v1/info", headers={"Origin": "https://elsewhere.example"})
    assert "access-control-allow-origin" not in cross.headers  # CORS is off by default
    assert "swagger" in requests.get(f"{base}/docs").text.lower()
    paths = requests.get(f"{base}/openapi.json").json()["paths"]
    assert {"/v1/match", "/v1/render", "/v1/tutorial", "/v1/info", "/healthz"} <= set(paths)


def test_a_rendered_clip_matches_to_a_preset_vita_loads(server, clip_wav, tmp_path):
    base, _ = server
    resp = requests.post(f"{base}/v1/match", files={"audio": ("pluck.wav", clip_wav)},
                         data={"preview": "true", "tutorial": "true",
                               "description": "a test tone"}, timeout=120)
    assert resp.status_code == 200, resp.text[:500]
    out = resp.json()
    preset = parse_preset(out["preset"]["content"], source="api")
    assert out["preset"]["filename"] == "synthmatch-pluck.vital"
    assert "synthmatch" in preset.data["preset_name"]
    assert "pluck.wav" in preset.data["comments"]
    audio = Renderer(get_space("core")).render_preset(preset, out["note"])
    assert audio.valid, audio.verdict
    params = out["parameters"]
    assert len(params) == 92 and all(p["text"] for p in params)
    # the default budget searched; confidences are the network's, given unless the answer
    # is a library entry's
    assert out["search"]["budget_seconds"] == 1.0 and out["search"]["rendered"] >= 1
    if out["search"]["winner"]["library_id"] is None:
        assert all(0 <= p["confidence"] <= 1 for p in params)
    else:
        assert all(p["confidence"] is None for p in params)
    assert 0 <= out["note"] <= 127 and out["note_source"] in ("model", "f0")
    assert np.isfinite(out["distance"]["mrstft"]) and out["distance"]["mrstft"] > 0
    preview, sr = sf.read(io.BytesIO(base64.b64decode(out["preview_wav_base64"])))
    assert sr == SR and len(preview) == 2 * SR and np.abs(preview).max() > 1e-3
    assert out["tutorial"]["source"] == "offline" and "Filter 1" in out["tutorial"]["text"]
    assert {"read", "predict", "render", "total"} <= set(out["timings_ms"])
    # the CLI's --json report has the same schema, key for key (the preview is the API's
    # option); run it on the same clip with the same shipped model
    (tmp_path / "pluck.wav").write_bytes(clip_wav)
    cli = subprocess.run([sys.executable, "-m", "model.match", str(tmp_path / "pluck.wav"),
                          "-o", str(tmp_path / "m.vital"), "--json", str(tmp_path / "m.json"),
                          "--tutorial"], capture_output=True, text=True, timeout=300,
                         env={k: v for k, v in os.environ.items() if k != "ANTHROPIC_API_KEY"})
    assert cli.returncode == 0, cli.stderr[-2000:]
    report = json.loads((tmp_path / "m.json").read_text())
    del out["preview_wav_base64"]
    assert _keys(report) == _keys(out)
    assert [p["name"] for p in report["parameters"]] == [p["name"] for p in out["parameters"]]


def _keys(doc):
    """The key structure of a JSON document (dicts' keys, recursively; a list's first item)."""
    if isinstance(doc, dict):
        return {k: _keys(v) for k, v in doc.items()}
    if isinstance(doc, list):
        return [_keys(doc[0])] if doc else []
    return None


def test_render_and_tutorial_of_a_real_preset(server, real_presets):
    base, _ = server
    data = real_presets[0].read_bytes()
    resp = requests.post(f"{base}/v1/render", files={"preset": (real_presets[0].name, data)},
                         data={"note": 64, "velocity": 0.7}, timeout=60)
    assert resp.status_code == 200 and resp.headers["content-type"] == "audio/wav"
    audio, sr = sf.read(io.BytesIO(resp.content))
    assert sr == SR and np.abs(audio).max() > 1e-3
    resp = requests.post(f"{base}/v1/tutorial", files={"preset": ("p.vital", data)},
                         data={"note": 60}, timeout=60)
    assert resp.status_code == 200, resp.text[:300]
    assert resp.json()["source"] == "offline" and "note 60" in resp.json()["text"]


def test_each_bad_input_gets_its_4xx_and_the_server_stays_healthy(server, clip_wav):
    base, _ = server
    match = f"{base}/v1/match"

    def post(name, data, **form):
        return requests.post(match, files={"audio": (name, data)}, data=form, timeout=60)

    _error(post("notes.txt", b"hello, not audio"), 415, "unsupported_media_type",
           "not an audio file")
    _error(post("empty.wav", b""), 422, "invalid_audio", "empty")
    _error(post("corrupt.wav", clip_wav[:12] + os.urandom(2000)), 422, "invalid_audio",
           "not a readable audio file")
    _error(post("long.wav", _wav(np.full(31 * 8000, 0.1, np.float32), 8000)), 422,
           "invalid_audio", "limit is 30 s")
    _error(post("silence.wav", _wav(np.zeros(SR, np.float32))), 422, "invalid_audio", "silent")
    _error(post("huge.wav", b"RIFF" + bytes(21 * 1024 * 1024)), 413, "payload_too_large",
           "20 MB")
    def chunks():  # no Content-Length: the limit is counted while the body streams in
        yield b"--b\r\nContent-Disposition: form-data; name=\"audio\"; filename=\"a.wav\"\r\n\r\n"
        for _ in range(22):
            yield bytes(1024 * 1024)

    _error(requests.post(match, data=chunks(), timeout=60,
                         headers={"Content-Type": "multipart/form-data; boundary=b"}),
           413, "payload_too_large", "20 MB")
    _error(post("clip.wav", clip_wav, budget_seconds="999"), 422, "invalid_request",
           "budget_seconds")
    _error(post("clip.wav", clip_wav, budget_seconds="soon"), 422, "invalid_request",
           "budget_seconds")
    _error(requests.post(match, data={"tutorial": "true"}), 422, "invalid_request", "audio")
    _error(requests.post(f"{base}/v1/render", files={"preset": ("x.vital", b"{not json")}),
           422, "invalid_preset", "x.vital")
    _error(requests.post(f"{base}/v1/render", files={"preset": ("x.vital", b'{"a": 1}')}), 422,
           "invalid_preset", "")
    _error(requests.post(f"{base}/v1/render", files={"preset": ("x.vital", b"{}")},
                         data={"note": 200}), 422, "invalid_request", "note")
    _error(requests.get(f"{base}/v1/nothing-here"), 404, "not_found")
    _error(requests.get(f"{base}/v1/match"), 405, "method_not_allowed")
    assert requests.get(f"{base}/healthz").status_code == 200
    assert post("clip.wav", clip_wav).status_code == 200


def test_concurrent_requests_share_model_batches(server, clip_wav):
    base, _ = server

    def one(i):
        # budget 0: the network's answer alone, so the answer does not depend on how much
        # of a search each request got through under load
        return requests.post(f"{base}/v1/match", files={"audio": (f"c{i}.wav", clip_wav)},
                             data={"budget_seconds": "0"}, timeout=120)

    with ThreadPoolExecutor(16) as pool:
        replies = list(pool.map(one, range(16)))
    assert all(r.status_code == 200 for r in replies), [r.text[:200] for r in replies]
    sizes = [r.json()["batch_size"] for r in replies]
    assert max(sizes) >= 2, sizes
    notes = {r.json()["note"] for r in replies}
    assert len(notes) == 1  # the same clip gets the same answer whatever its batch


def test_auth_cors_and_timeouts_when_configured(server, clip_wav):
    base, serve = server
    try:
        _deploy(serve, {"auth_token_env": TOKEN_ENV, "request_timeout_s": 0.001,
                        "cors_origins": ["https://studio.example"]})
        end, seen = time.monotonic() + 120, []
        while (status := requests.get(f"{base}/v1/info", timeout=30).status_code) != 401:
            seen.append(status)
            assert time.monotonic() < end, "the locked-down config never took effect"
            time.sleep(0.5)
        # the old ingress until Serve stops it, then the new one's 503s while it builds
        assert set(seen) <= {200, 503}, seen
        resp = _error(requests.get(f"{base}/v1/info"), 401, "unauthorized", "missing")
        assert requests.get(f"{base}/v1/info").headers["www-authenticate"] == "Bearer"
        _error(requests.get(f"{base}/v1/info", headers={"Authorization": "Bearer nope"}),
               401, "unauthorized", "invalid")
        _error(requests.post(f"{base}/v1/match", files={"audio": ("c.wav", clip_wav)}), 401,
               "unauthorized")
        ok = {"Authorization": f"Bearer {TOKEN}"}
        info = requests.get(f"{base}/v1/info", headers=ok)
        assert info.status_code == 200 and info.json()["auth"] is True
        assert requests.get(f"{base}/healthz").status_code == 200  # open to probes
        cross = requests.get(f"{base}/v1/info", headers={**ok, "Origin": "https://studio.example"})
        assert cross.headers["access-control-allow-origin"] == "https://studio.example"
        preflight = requests.options(f"{base}/v1/match", headers={
            "Origin": "https://studio.example", "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization"})
        assert preflight.status_code == 200
        # budget 0: the 1 ms limit is the request's whole time (a search's budget is added
        # to it, and a search ends within its budget)
        _error(requests.post(f"{base}/v1/match", files={"audio": ("c.wav", clip_wav)},
                             data={"budget_seconds": "0"}, headers=ok, timeout=60), 504,
               "timeout", "limit")
        assert resp
    finally:
        _deploy(serve, {})
        end = time.monotonic() + 120
        while requests.get(f"{base}/v1/info").status_code != 200:
            assert time.monotonic() < end
            time.sleep(0.5)


def test_the_demo_matches_a_clip_in_headless_chromium(server, clip_wav, tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    base, _ = server
    chromium, driver_path = shutil.which("chromium"), shutil.which("chromedriver")
    assert chromium and driver_path, "install Debian's chromium and chromium-driver"
    clip = tmp_path / "hum.wav"
    clip.write_bytes(clip_wav)
    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--window-size=1400,2000",
                 f"--user-data-dir={tmp_path / 'profile'}"):
        opts.add_argument(flag)
    driver = webdriver.Chrome(service=Service(driver_path), options=opts)
    try:
        driver.get(f"{base}/demo/")
        wait = WebDriverWait(driver, 120)
        upload = wait.until(ec.presence_of_element_located(
            (By.CSS_SELECTOR, "#clip input[type=file]")))
        upload.send_keys(str(clip))
        wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "#clip audio, #clip "
                                                   "[data-testid=waveform-controls]")))
        driver.find_element(By.CSS_SELECTOR, "#match").click()
        wait.until(ec.text_to_be_present_in_element((By.CSS_SELECTOR, "#summary"), "Note"))
        summary = driver.find_element(By.CSS_SELECTOR, "#summary").text
        assert "distance to your clip" in summary
        link = wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "#vital a[href]")))
        href = link.get_attribute("href")
        assert href.endswith(".vital"), href
        preset = parse_preset(requests.get(href, timeout=30).content, source="demo")
        assert "hum.wav" in preset.data["comments"]
        table = driver.find_element(By.CSS_SELECTOR, "#params").text
        assert "env_1_attack" in table
        assert "Init Preset" in driver.find_element(By.CSS_SELECTOR, "#tutorial").text
    finally:
        driver.quit()


def test_configuration_is_checked_and_the_deploy_config_is_valid():
    from ray.serve.schema import ServeDeploySchema

    from serve.__main__ import main
    from serve.app import build_app
    from serve.config import ServeConfig

    with pytest.raises(ConfigError, match="max_upload_mb"):
        build_app({"max_upload_mb": "-1"})
    with pytest.raises(ConfigError, match="unknown key"):
        build_app({"max_uplaod_mb": 5})
    assert build_app({"max_batch_size": "1", "demo": "false", "cors_origins": "https://a.b"})
    assert ServeConfig.from_dict({"cors_origins": ["https://a.b"]}).cors_origins == ("https://a.b",)
    assert main(["--max-batch-size", "0"]) == 2  # refused before Ray starts

    from tests.conftest import REPO

    config = yaml.safe_load((REPO / "serve" / "production.yaml").read_text())
    schema = ServeDeploySchema.model_validate(config)
    (app,) = schema.applications
    assert app.import_path == "serve.app:build_app"
    build_app(app.args)  # the config's arguments are valid ServeConfig keys
    names = {d.name for d in app.deployments}
    assert names == {"Api", "Model", "Render", "Search"}
