"""The README's Celery example, as tusring's AMQP test runs it.

tusring is started with
    --hooks-amqp-url amqp://guest:guest@localhost:5672 --hooks-amqp-exchange celery
    --hooks-amqp-exchange-kind direct --hooks-amqp-routing-key celery --hooks-amqp-celery
and each event becomes a Celery task `rustus.<event>` whose only argument is the hook
message (a dict). Run a worker with:
    celery -A celery_app worker --pool=solo -Q celery

The test points CELERY_BROKER_URL at its broker and CELERY_RECORD_FILE at a file where
every task appends one JSON line {"task": ..., "args": [...]} (the README example only
prints).
"""
import json
import os

from celery import Celery

app = Celery("hooks", broker=os.environ.get("CELERY_BROKER_URL", "amqp://guest:guest@localhost:5672"))

RECORD = os.environ.get("CELERY_RECORD_FILE")


def record(task, *args):
    if RECORD:
        with open(RECORD, "a", encoding="utf-8") as f:
            f.write(json.dumps({"task": task, "args": list(args)}) + "\n")
    else:
        print(task, json.dumps(args))


@app.task(name="rustus.pre-create")
def pre_create(hook):
    record("rustus.pre-create", hook)


@app.task(name="rustus.post-create")
def post_create(hook):
    record("rustus.post-create", hook)


@app.task(name="rustus.post-receive")
def post_receive(hook):
    record("rustus.post-receive", hook)


@app.task(name="rustus.post-finish")
def post_finish(hook):
    record("rustus.post-finish", hook)


@app.task(name="rustus.pre-terminate")
def pre_terminate(hook):
    record("rustus.pre-terminate", hook)


@app.task(name="rustus.post-terminate")
def post_terminate(hook):
    record("rustus.post-terminate", hook)
