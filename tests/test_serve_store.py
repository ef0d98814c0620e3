"""The service's store of jobs and tokens: one contract, run on SQLite and on PostgreSQL."""

from __future__ import annotations

import threading
import uuid

import pytest
from conftest import scratch_postgres

from synister.serve import tokens
from synister.serve.store import JobFinished, NewJob, QueueFull, StoreError, open_store


def new_job(user: str = "alice", rows: int = 10, **options) -> NewJob:
    return NewJob(uuid.uuid4().hex, user, "demo", "vol", "my table.csv", "csv", rows, options)


def run_out_lease(store, job_id: str) -> None:
    """Move a job's lease an hour into the past, as the database's clock would move past it
    (a lease that has run out, whatever the machine's load)."""
    with store._transaction(write=True) as cur:
        store._execute(
            cur, "UPDATE serve_jobs SET lease_until = lease_until - 3600 WHERE id = ?", (job_id,)
        )


class StoreContract:
    """Behaviour every backend must show; subclasses give the database ``url``. ``other_store``
    is a second connection to the same database, as another process or machine would have."""

    @pytest.fixture
    def store(self, url):
        with open_store(url) as store:
            yield store

    @pytest.fixture
    def other_store(self, url, store):
        with open_store(url) as other:
            yield other

    @pytest.fixture
    def reopen(self, url):
        return lambda: open_store(url)

    # -- tokens ---------------------------------------------------------------------------

    def test_token_authenticates_its_user_and_is_stored_only_as_hash(self, store):
        key_id, token = store.create_token("alice")
        assert token.startswith(f"syn_{key_id}_") and len(token) >= 4 + 12 + 1 + 43
        principal = store.authenticate(token)
        assert (principal.user, principal.admin, principal.key_id) == ("alice", False, key_id)
        rows = store._rows(store._connection().cursor(), "SELECT * FROM serve_tokens")
        assert token not in repr(rows) and rows[0]["token_hash"] == tokens.token_hash(token)

    def test_wrong_malformed_and_revoked_tokens_fail(self, store):
        key_id, token = store.create_token("alice", admin=True)
        assert store.authenticate(token).admin
        wrong = token[:-1] + ("A" if token[-1] != "A" else "B")
        assert store.authenticate(wrong) is None
        assert store.authenticate("syn_000000000000_" + "x" * 43) is None
        assert store.authenticate("") is None
        assert store.authenticate("Bearer " + token) is None
        assert store.revoke_token(key_id)
        assert store.authenticate(token) is None
        assert not store.revoke_token(key_id)

    def test_revoke_user_and_list(self, store):
        store.create_token("alice")
        store.create_token("alice")
        store.create_token("bob", admin=True)
        assert store.revoke_user("alice") == 2
        listed = store.list_tokens()
        assert [(t.user, t.admin, t.revoked is not None) for t in listed] == [
            ("alice", False, True),
            ("alice", False, True),
            ("bob", True, False),
        ]

    def test_bad_user_name_is_refused(self, store):
        with pytest.raises(StoreError, match="user name"):
            store.create_token("../etc")

    # -- jobs -------------------------------------------------------------------------------

    def test_submit_get_list(self, store):
        first = store.submit(new_job(units="voxels"), max_active=5)
        assert (
            first.state == "queued" and first.total == 10 and first.options == {"units": "voxels"}
        )
        second = store.submit(new_job(), max_active=5)
        store.submit(new_job("bob"), max_active=5)
        assert store.get_job(first.id).input_name == "my table.csv"
        assert store.get_job("nope") is None
        assert [j.id for j in store.list_jobs("alice")] == [second.id, first.id]
        assert len(store.list_jobs()) == 3
        assert store.counts() == {"queued": 3, "running": 0, "done": 0, "failed": 0, "cancelled": 0}

    def test_queue_limit_counts_queued_and_running(self, store):
        store.submit(new_job(), max_active=2)
        store.submit(new_job(), max_active=2)
        with pytest.raises(QueueFull, match="2 queued or running"):
            store.submit(new_job(), max_active=2)
        assert len(store.list_jobs("alice")) == 2
        store.submit(new_job("bob"), max_active=2)  # per user
        job = store.claim("w1", 30, 3)
        store.finish(job.id, "w1", "done")
        store.submit(new_job(), max_active=2)

    def test_queue_limit_holds_under_concurrent_submissions(self, store, other_store):
        errors = []

        def submit(s):
            for _ in range(5):
                try:
                    s.submit(new_job(), max_active=4)
                except QueueFull:
                    errors.append(1)

        threads = [threading.Thread(target=submit, args=(s,)) for s in (store, other_store)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert store.active_jobs("alice") == 4 and len(errors) == 6

    def test_claim_heartbeat_finish(self, store):
        job = store.submit(new_job(), max_active=5)
        claimed = store.claim("w1", 30, 3)
        assert (claimed.id, claimed.state, claimed.worker, claimed.attempts) == (
            job.id,
            "running",
            "w1",
            1,
        )
        assert claimed.started is not None and claimed.lease_until > claimed.started
        assert store.claim("w2", 30, 3) is None
        assert store.heartbeat(job.id, "w1", 30, 4, 10, 12.5) == "ok"
        running = store.get_job(job.id)
        assert (running.done, running.total, running.synapses_per_second) == (4, 10, 12.5)
        assert store.running_rate() == 12.5
        assert store.heartbeat(job.id, "w2", 30, 4, 10, 1.0) == "lost"
        assert store.finish(job.id, "w1", "done", result={"resumed_from": 0})
        done = store.get_job(job.id)
        assert (done.state, done.done, done.result) == ("done", 10, {"resumed_from": 0})
        assert done.finished >= done.started
        assert not store.finish(job.id, "w1", "failed", "late")
        assert store.predicted_total() == 10

    def test_claims_oldest_first(self, store):
        ids = [store.submit(new_job(), max_active=5).id for _ in range(3)]
        assert [store.claim("w", 30, 3).id for _ in range(3)] == ids

    def test_expired_lease_is_claimed_again_then_fails(self, store):
        job = store.submit(new_job(), max_active=5)
        store.claim("dead1", 30, 2)
        assert store.claim("w2", 30, 2) is None  # lease still held
        run_out_lease(store, job.id)
        again = store.claim("dead2", 30, 2)
        assert (again.id, again.worker, again.attempts) == (job.id, "dead2", 2)
        assert store.heartbeat(job.id, "dead1", 30, 1, 10, None) == "lost"
        run_out_lease(store, job.id)
        assert store.claim("w3", 30, 2) is None
        failed = store.get_job(job.id)
        assert failed.state == "failed" and "2 times" in failed.error

    def test_release_hands_back_without_counting(self, store):
        job = store.submit(new_job(), max_active=5)
        store.claim("w1", 30, 3)
        assert store.release(job.id, "w1")
        queued = store.get_job(job.id)
        assert (queued.state, queued.attempts, queued.worker) == ("queued", 0, None)
        assert not store.release(job.id, "w1")
        assert store.claim("w2", 30, 3).attempts == 1

    def test_cancel(self, store):
        queued = store.submit(new_job(), max_active=5)
        running = store.submit(new_job(), max_active=5)
        assert store.cancel(queued.id).state == "cancelled"
        assert store.claim("w1", 30, 3).id == running.id  # the cancelled one is skipped
        assert store.cancel(running.id).cancel_requested
        assert store.heartbeat(running.id, "w1", 30, 1, 10, None) == "cancel"
        store.finish(running.id, "w1", "cancelled", "cancelled by the user")
        with pytest.raises(JobFinished, match="already cancelled"):
            store.cancel(running.id)

    def test_delete_a_job_unless_it_runs(self, store):
        running = store.submit(new_job(), max_active=5)
        queued = store.submit(new_job(), max_active=5)
        assert store.claim("w1", 30, 3).id == running.id
        assert not store.delete_job(running.id) and store.get_job(running.id).state == "running"
        assert store.delete_job(queued.id) and store.get_job(queued.id) is None
        assert store.claim("w2", 30, 3) is None  # a deleted queued job never runs
        store.finish(running.id, "w1", "done")
        assert store.delete_job(running.id) and store.list_jobs() == []
        assert not store.delete_job(running.id)

    def test_cancelled_job_of_a_dead_worker_ends_cancelled(self, store):
        job = store.submit(new_job(), max_active=5)
        store.claim("dead", 30, 3)
        store.cancel(job.id)
        run_out_lease(store, job.id)
        assert store.claim("w", 30, 3) is None
        assert store.get_job(job.id).state == "cancelled"

    def test_concurrent_claims_take_each_job_once(self, store, other_store):
        ids = {store.submit(new_job(f"u{i}"), max_active=5).id for i in range(30)}
        taken: dict[str, list[str]] = {"a": [], "b": []}

        def work(s, name):
            while (job := s.claim(name, 30, 3)) is not None:
                taken[name].append(job.id)

        threads = [
            threading.Thread(target=work, args=(s, n))
            for s, n in ((store, "a"), (other_store, "b"))
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(taken["a"] + taken["b"]) == sorted(ids)

    def test_reopening_keeps_jobs_and_tokens(self, store, reopen):
        job = store.submit(new_job(), max_active=5)
        _, token = store.create_token("alice")
        store.close()
        again = reopen()
        assert again.get_job(job.id).state == "queued"
        assert again.authenticate(token).user == "alice"
        again.close()


class TestSQLiteStore(StoreContract):
    @pytest.fixture
    def url(self, tmp_path):
        return f"sqlite:///{tmp_path / 'service.db'}"

    def test_memory_and_unknown_urls_are_refused(self):
        with pytest.raises(StoreError, match="needs a file"):
            open_store("sqlite:///:memory:")
        with pytest.raises(StoreError, match="mongodb"):
            open_store("mongodb://localhost/x")


@pytest.fixture
def postgres_database():
    with scratch_postgres("synister_serve") as conninfo:
        yield conninfo


@pytest.mark.postgres
class TestPostgresStore(StoreContract):
    @pytest.fixture
    def url(self, postgres_database):
        return postgres_database

    def test_password_never_in_errors(self, postgres_database):
        from urllib.parse import parse_qsl, urlencode

        info = dict(parse_qsl(postgres_database.split("?", 1)[1]))
        info["password"] = "not-the-password-42"
        with pytest.raises(StoreError) as error:
            open_store("postgresql://?" + urlencode(info))
        assert "not-the-password-42" not in str(error.value)
