"""Worker threads that feed the sandbox's supervisors: each owns one supervisor and keeps up
to PIPELINE_DEPTH jobs in flight on it, so that round trips do not add to the time per job; a
supervisor a verifier killed is replaced and its jobs sent again. Every backend whose
supervisors this process talks to (local, host, docker) judges through `run_supervised`; a Ray
worker runs it on its own node.
"""

import queue
import threading
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from tqdm import tqdm

from ..sandbox.protocol import CRASH, Verdict, decode_verdicts
from .supervisors import Pool, SupervisorLike

# Jobs sent to a supervisor before the first of them is answered: one being judged, one
# waiting. More buys nothing (the supervisor judges one at a time) and loses more work when
# a verifier kills its supervisor.
PIPELINE_DEPTH = 2
# A reply that takes longer than every input timing out plus this is a hung supervisor.
REPLY_GRACE_S = 30.0


class VerifierJob(NamedTuple):
    source: str  # Python source defining evaluate(response) -> bool
    inputs: Sequence[str]  # the strings to judge


def run_supervised(jobs: list[VerifierJob], progress: bool, done: Callable[[int, list[Verdict]], None],
                   already_done: int, pool: Pool, workers: int, timeout_s: float) -> None:
    """Judge `jobs` on up to `workers` supervisors taken from `pool`, calling done(index,
    verdicts) in this thread as each job is finished (a job without inputs is skipped)."""
    todo = [i for i, job in enumerate(jobs) if job.inputs]
    if not todo:
        return
    pending: queue.SimpleQueue[int] = queue.SimpleQueue()
    for i in todo:
        pending.put(i)
    finished: queue.SimpleQueue[tuple[int, list[Verdict]] | BaseException] = queue.SimpleQueue()
    stopping = threading.Event()
    supervisors = pool.take(min(workers, len(todo)), stopping)
    threads = [
        threading.Thread(target=_work, args=(s, jobs, pending, finished, timeout_s),
                         name=f"sandbox-worker-{n}", daemon=True)
        for n, s in enumerate(supervisors)
    ]
    with tqdm(total=already_done + len(jobs), initial=already_done + len(jobs) - len(todo),
              disable=not progress, desc="sandbox", unit="job") as bar:
        for thread in threads:
            thread.start()
        try:
            for _ in todo:
                outcome = finished.get()
                if isinstance(outcome, BaseException):
                    raise outcome
                done(*outcome)
                bar.update()
        except BaseException:
            # Don't wait for the in-flight jobs: kill their supervisors, the workers then stop.
            stopping.set()
            for supervisor in supervisors:
                supervisor.kill()
            raise
        finally:
            for thread in threads:
                thread.join()
            pool.give_back(supervisors)


def _work(supervisor: SupervisorLike, jobs: list[VerifierJob], pending: queue.SimpleQueue,
          finished: queue.SimpleQueue, timeout_s: float) -> None:
    """A worker thread: judge jobs from `pending` until none are left (or we are stopping),
    with up to PIPELINE_DEPTH of them sent ahead."""
    in_flight: deque[int] = deque()  # sent, unanswered, in the order the supervisor takes them
    again: deque[int] = deque()  # to send again on a fresh supervisor
    deaths: dict[int, int] = {}  # supervisors that died with this job at the head
    fruitless = 0  # deaths in a row with no job sent to blame
    try:
        while not supervisor.stopping.is_set():
            while len(in_flight) < PIPELINE_DEPTH:
                if again:
                    index = again.popleft()
                else:
                    try:
                        index = pending.get_nowait()
                    except queue.Empty:
                        break
                if supervisor.send(_request(index, jobs[index], timeout_s)):
                    in_flight.append(index)
                    continue
                again.appendleft(index)
                break  # it is dead: charged below to the job it was on, if any
            if not in_flight and not again:
                return
            head = in_flight[0] if in_flight else None
            reply = supervisor.receive(_reply_budget(jobs[head], timeout_s)) if head is not None else None
            if reply is not None:
                in_flight.popleft()
                finished.put((head, _verdicts(head, jobs[head], reply)))
                continue
            # The supervisor died (or hung). A verifier can kill it (see supervisor.py): the
            # job it was on (the first unanswered) is retried once on a fresh one, in case
            # something else did; the jobs sent after it are sent again.
            supervisor.discard()
            fruitless = fruitless + 1 if head is None else 0
            if fruitless > 3:
                raise RuntimeError("sandbox supervisors keep dying before taking a request")
            lost = list(in_flight)
            in_flight.clear()
            if head is not None:
                deaths[head] = deaths.get(head, 0) + 1
                if deaths[head] >= 2:
                    crash = Verdict(CRASH, "sandbox supervisor died twice on this verifier")
                    finished.put((head, [crash] * len(jobs[head].inputs)))
                    lost.pop(0)
            again.extendleft(reversed(lost))
    except BaseException as exc:
        finished.put(exc)


def _request(index: int, job: VerifierJob, timeout_s: float) -> dict[str, Any]:
    return {"id": index, "source": job.source, "inputs": list(job.inputs), "timeout_s": timeout_s}


def _reply_budget(job: VerifierJob, timeout_s: float) -> float:
    """A safety net only: the supervisor answers within about timeout_s per input."""
    return len(job.inputs) * (timeout_s + 1) + REPLY_GRACE_S


def _verdicts(index: int, job: VerifierJob, reply: dict[str, Any]) -> list[Verdict]:
    try:
        if reply.get("id") != index:
            raise ValueError(f"expected job {index}")
        return decode_verdicts(reply, len(job.inputs))
    except (ValueError, TypeError) as exc:
        raise RuntimeError(f"sandbox supervisor answered job {index} with {reply!r:.200} ({exc})") from None
