"""The gateway's media store: an S3-compatible object store (tested against moto's server mode,
a real S3 API server over HTTP in this process, standing in for AWS S3 or MinIO), and async
image-to-video results kept in the store so that they outlive a gateway restart."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest
from gateway_fleet import Fleet, FleetFactory, LoopThread, png

from livestream.gateway.jobs import AsyncJobs
from livestream.gateway.storage import LocalStore, S3Location, S3Store, parse_object_store

BUCKET = "media"


@pytest.fixture(scope="module")
def s3_server() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                          aws_access_key_id="key", aws_secret_access_key="secret")  # fmt: skip
    client.create_bucket(Bucket=BUCKET)
    yield endpoint
    server.stop()


def _object_store(endpoint: str, prefix: str) -> str:
    return f"s3+{endpoint.replace('://', '://key:secret@')}/{BUCKET}/{prefix}"


def _keys(endpoint: str, prefix: str) -> list[str]:
    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                          aws_access_key_id="key", aws_secret_access_key="secret")  # fmt: skip
    return sorted(o["Key"] for o in client.list_objects_v2(Bucket=BUCKET, Prefix=prefix).get("Contents", []))


def _async_video(fleet: Fleet) -> str:
    files = {"image": ("a.png", png(), "image/png")}
    resp = httpx.post(f"{fleet.url}/image-to-video", files=files, data={"model_id": "svd"}, headers={"Prefer": "respond-async"})
    assert resp.status_code == 202
    request_id: str = resp.json()["request_id"]
    return request_id


def _wait_result(url: str, request_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 10
    while (done := httpx.post(f"{url}/image-to-video/result", json={"request_id": request_id})).status_code == 202:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert done.status_code == 200, done.text
    result: dict[str, Any] = done.json()
    return result


def test_parse_object_store() -> None:
    assert parse_object_store("s3://AK:S%2Fx@eu-west-1/bucket/some/prefix") == S3Location(
        "bucket", "some/prefix/", None, "eu-west-1", "AK", "S/x")  # fmt: skip
    assert parse_object_store("s3+http://k:s@127.0.0.1:9000/b") == S3Location("b", "", "http://127.0.0.1:9000", "us-east-1", "k", "s")
    assert parse_object_store("s3+https://minio.local/b/p?region=eu").endpoint_url == "https://minio.local"
    for bad in ("s3://region", "gs://k:s@r/b", "s3://k@r/b"):
        with pytest.raises(ValueError):
            parse_object_store(bad)
    with pytest.raises(ValueError) as info:
        parse_object_store("s3://key:topsecret@region")
    assert "topsecret" not in str(info.value)


def test_videos_and_async_results_in_an_s3_store(make_fleet: FleetFactory, s3_server: str) -> None:
    store = _object_store(s3_server, "gw1")
    fleet = make_fleet(object_store=store)
    files = {"image": ("a.png", png(), "image/png")}
    answer = httpx.post(f"{fleet.url}/image-to-video", files=files, data={"model_id": "svd"})
    assert answer.status_code == 200
    video_url = answer.json()["images"][0]["url"]
    assert video_url.startswith(fleet.url + "/stream/") and video_url.endswith("/video.mp4")
    video = httpx.get(video_url)
    assert video.status_code == 200 and video.headers["content-type"] == "video/mp4" and video.content[4:8] == b"ftyp"
    key = video_url.split("/stream/", 1)[1]
    assert f"gw1/media/{key}" in _keys(s3_server, "gw1/")
    assert httpx.get(f"{fleet.url}/stream/{key.split('/')[0]}/other.mp4").status_code == 404
    # An async job: its record lives in the bucket, so another gateway (a restart, or a second
    # gateway on the same store) answers the poll and serves the video.
    request_id = _async_video(fleet)
    result = _wait_result(fleet.url, request_id)
    assert result["status"] == "complete" and result["result"]["images"][0]["url"].endswith(".mp4")
    assert f"gw1/jobs/{request_id}.json" in _keys(s3_server, "gw1/")
    other = make_fleet(runners=1, object_store=store)
    assert _wait_result(other.url, request_id) == result
    moved = result["result"]["images"][0]["url"].replace(fleet.url, other.url)
    assert httpx.get(moved).status_code == 200
    assert httpx.post(f"{other.url}/image-to-video/result", json={"request_id": "nope-nope-nope"}).status_code == 400


def test_s3_store_ttl_and_sweep(s3_server: str, loop_thread: LoopThread) -> None:
    async def scenario() -> None:
        location = parse_object_store(_object_store(s3_server, "ttl"))
        live = S3Store(location, ttl=600)
        key = await live.put("a.png", b"png", "image/png")
        await live.put_record("r" * 16, {"status": "complete"})
        stored = await live.get(key)
        assert stored is not None and stored.data == b"png" and stored.content_type == "image/png"
        assert await live.get_record("r" * 16) == {"status": "complete"}
        assert await live.get("../../etc/passwd") is None and await live.get_record("../x") is None
        expired = S3Store(location, ttl=-5)  # everything is older than that
        assert await expired.get(key) is None and await expired.get_record("r" * 16) is None
        assert await expired.sweep() == 2
        assert await live.get(key) is None
        await live.close()
        await expired.close()

    loop_thread.call(scenario())
    assert _keys(s3_server, "ttl/") == []


def test_async_result_survives_a_restart_on_a_local_store(make_fleet: FleetFactory, tmp_path: Path) -> None:
    fleet = make_fleet(storage_dir=tmp_path)
    request_id = _async_video(fleet)
    result = _wait_result(fleet.url, request_id)
    restarted = make_fleet(runners=1, storage_dir=tmp_path)  # a new gateway process on the same folder
    assert _wait_result(restarted.url, request_id) == result
    video = httpx.get(result["result"]["images"][0]["url"].replace(fleet.url, restarted.url))
    assert video.status_code == 200 and video.headers["content-type"] == "video/mp4"
    # Without a folder the store is temporary: a new gateway does not know the id.
    assert httpx.post(f"{make_fleet(runners=1).url}/image-to-video/result", json={"request_id": request_id}).status_code == 400


def test_a_job_whose_gateway_stopped_is_reported(tmp_path: Path, loop_thread: LoopThread) -> None:
    async def scenario() -> None:
        store = LocalStore(tmp_path, ttl=600)
        jobs = AsyncJobs(store)
        await store.put_record("a" * 32, {"status": "processing", "owner": "gone", "updated": time.time() - 3600})
        await store.put_record("b" * 32, {"status": "processing", "owner": "alive", "updated": time.time()})
        lost = await jobs.poll("a" * 32)
        assert lost is not None and lost["status"] == "complete" and "stopped" in lost["result"]["error"]["message"]
        assert await jobs.poll("b" * 32) == {"status": "processing"}
        # A running job touches its record; a failing one stores its error.
        fast = AsyncJobs(store, heartbeat=0.05)

        async def slow_failure() -> dict[str, Any]:
            await asyncio.sleep(0.2)
            raise RuntimeError("runner failed")

        request_id = await fast.start(slow_failure())
        await asyncio.sleep(0.12)
        record = await store.get_record(request_id)
        assert record is not None and record["owner"] == fast.owner and time.time() - record["updated"] < 0.1
        await asyncio.sleep(0.2)
        assert await fast.poll(request_id) == {"status": "complete",
                                              "result": {"images": [], "error": {"message": "runner failed"}}}  # fmt: skip
        await fast.close()
        await jobs.close()

    loop_thread.call(scenario())
