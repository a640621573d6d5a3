"""The floors: the same storage and HTTP work as the app's paths, with none of the app's logic.

- raw enqueue + dequeue: one ``send_message``, one ``receive_message``, one ``delete_message``
  with a plain azure-storage-queue client;
- raw enqueues: sequential ``send_message`` calls, per second;
- raw loopback copy: a plain ``httpx`` stream from the simulator's recording endpoint into one
  ``upload_blob`` (Put Blob) when the body fits in one 4 MiB block, else a staged-block upload
  (``stage_block`` per 4 MiB, ``commit_block_list``) with the azure SDK: the cheapest upload
  the SDK offers for each size, as the app's writer does.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import TYPE_CHECKING, Any

import httpx

if TYPE_CHECKING:
    from azure.storage.blob.aio import BlobClient
    from azure.storage.queue.aio import QueueClient

    from benchmarks.rig import Recording

FLOOR_QUEUE = "bench-floor"
# The size of a download job on the queue (JSON with ids, URL and a token), so both carry alike.
JOB_SIZED_MESSAGE = "x" * 640
# Same block size as the app's writer: the floor differs only by the app's logic.
BLOCK_SIZE = 4 * 1024 * 1024


def floor_queue(connection_string: str) -> QueueClient:
    from azure.storage.queue.aio import QueueClient

    return QueueClient.from_connection_string(connection_string, FLOOR_QUEUE)


async def ensure_queue(queue: QueueClient) -> None:
    from azure.core.exceptions import ResourceExistsError

    try:
        await queue.create_queue()
    except ResourceExistsError:
        await queue.clear_messages()


async def raw_enqueue_dequeue(queue: QueueClient) -> float:
    """Seconds for one enqueue, one dequeue and one delete."""
    started = time.perf_counter()
    await queue.send_message(JOB_SIZED_MESSAGE)
    message = await queue.receive_message(visibility_timeout=30)
    if message is None:
        raise RuntimeError("floor: the message just sent was not received")
    await queue.delete_message(message)
    return time.perf_counter() - started


async def raw_enqueues(queue: QueueClient, count: int) -> float:
    """Seconds for ``count`` sequential enqueues."""
    started = time.perf_counter()
    for _ in range(count):
        await queue.send_message(JOB_SIZED_MESSAGE)
    return time.perf_counter() - started


def plain_http_client() -> httpx.AsyncClient:
    return httpx.AsyncClient(timeout=httpx.Timeout(30.0), trust_env=False)


def job_sized(location: str) -> str:
    """A floor message as large as a download job, naming the recording it stands for."""
    return json.dumps({"location": location, "padding": "x" * max(0, 600 - len(location))})


def location_of(message: str) -> str:
    location: str = json.loads(message)["location"]
    return location


async def raw_copy(
    http: httpx.AsyncClient, blob: BlobClient, recording: Recording, *, verify: bool = True
) -> float:
    """Seconds to stream ``recording`` into ``blob``: one Put Blob, or staged blocks and a commit.

    ``verify`` reads the blob's size back afterwards (outside the time), one more request.
    """
    from azure.storage.blob import BlobBlock

    started = time.perf_counter()
    prefix = uuid.uuid4().hex
    block_ids: list[str] = []
    buffer = bytearray()

    async def stage(data: bytes) -> None:
        block_id = f"{prefix}-{len(block_ids):06d}"
        await blob.stage_block(block_id, data, length=len(data))
        block_ids.append(block_id)

    headers = {"Authorization": f"Bearer {recording.access_token}"}
    async with http.stream("GET", recording.location, headers=headers) as response:
        response.raise_for_status()
        async for chunk in response.aiter_bytes():
            buffer += chunk
            if len(buffer) >= BLOCK_SIZE:
                await stage(bytes(buffer[:BLOCK_SIZE]))
                del buffer[:BLOCK_SIZE]
    if not block_ids:
        await blob.upload_blob(bytes(buffer), length=len(buffer), overwrite=True)
    else:
        if buffer:
            await stage(bytes(buffer))
        await blob.commit_block_list([BlobBlock(block_id=b) for b in block_ids])
    elapsed = time.perf_counter() - started
    if not verify:
        return elapsed
    properties: Any = await blob.get_blob_properties()
    if properties.size != recording.size:
        raise RuntimeError(f"floor copy stored {properties.size} of {recording.size} bytes")
    return elapsed
