"""`safewatch infra`: the local broker and Alertmanager, or the loopback cluster."""

from __future__ import annotations

import argparse
from typing import Any

from jobs.cli.common import load_settings, log
from pipelines.errors import SafewatchError
from pipelines.settings import Settings


def cmd_infra(args: argparse.Namespace) -> int:
    from pipelines.errors import InfraError
    from pipelines.infra.alertmanager import LocalAlertmanager
    from pipelines.infra.kafka_broker import LocalKafkaBroker
    from pipelines.kafka.admin import ensure_topics

    settings = load_settings(args)
    if args.cluster and args.action != "status":
        return infra_cluster(settings, args.action)
    broker = LocalKafkaBroker(settings.broker, log=log)
    alertmanager = LocalAlertmanager(settings.alerting, log=log)
    if args.action == "up":
        broker.start()
        created = ensure_topics(settings.kafka, log=log)
        log(f"topics created: {', '.join(created) if created else 'none (all exist)'}")
        log(f"Kafka is up at {broker.bootstrap_servers}")
        try:
            alertmanager.start()
            log(f"Alertmanager is up at {alertmanager.url}")
        except InfraError as exc:
            log(f"Alertmanager not started: {exc}")
        log("stop them with: safewatch infra down")
    elif args.action == "down":
        broker.stop()
        alertmanager.stop()
    else:
        print(broker.status().describe())
        print(alertmanager.status().describe())
        infra_cluster(settings, "status")
    return 0


def infra_cluster(settings: Settings, action: str) -> int:
    """up, down or status of the loopback cluster: Kafka brokers, Spark master and workers."""
    from pipelines.infra.kafka_cluster import LocalKafkaCluster
    from pipelines.infra.spark_cluster import LocalSparkCluster
    from pipelines.kafka.admin import ensure_topics

    kafka_cluster = LocalKafkaCluster(settings.cluster, jars_dir=settings.broker.jars_dir, log=log)
    spark_cluster = LocalSparkCluster(settings.cluster, log=log)
    if action == "status":
        for node in kafka_cluster.status():
            print(node.describe())
        print(spark_cluster.status().describe())
    elif action == "down":
        spark_cluster.stop()
        kafka_cluster.stop()
    else:
        kafka_was_up = all(node.running for node in kafka_cluster.status())
        kafka_cluster.start()
        try:
            kafka = kafka_cluster.kafka_settings(settings.kafka)
            created = ensure_topics(kafka, log=log)
            log(f"topics created: {', '.join(created) if created else 'none (all exist)'}")
            spark_cluster.start()
        except SafewatchError:
            if not kafka_was_up:
                kafka_cluster.stop()
            raise
        c = settings.cluster
        log("the cluster is up; point the job at it with:")
        print(f"  export SAFEWATCH_SPARK__MASTER={spark_cluster.master_url}")
        print(f"  export SAFEWATCH_KAFKA__BOOTSTRAP_SERVERS={kafka_cluster.bootstrap_servers}")
        print(f"  export SAFEWATCH_KAFKA__REPLICATION_FACTOR={c.kafka_replication_factor}")
        log(
            f"then e.g. `safewatch produce` and `safewatch run --until-caught-up`; Spark's UI: "
            f"{spark_cluster.webui_url}; stop it all with: safewatch infra down --cluster"
        )
    return 0


def add_infra(sub: Any) -> None:
    p = sub.add_parser(
        "infra",
        help="start, stop or inspect the local Kafka broker and Alertmanager, or the loopback "
        "cluster",
        description="Local infrastructure. Without --cluster: one Kafka broker and "
        "Alertmanager (settings [broker], [alerting]). With --cluster: a Kafka cluster of "
        "three KRaft brokers and a Spark standalone master with two workers, all on loopback "
        "(settings [cluster]; docs/cluster.md).",
    )
    p.add_argument(
        "action",
        choices=["up", "down", "status"],
        help="up: start the broker (KRaft, single node), create the topics, start Alertmanager; "
        "down: stop them; status: are they running, where (the cluster's processes too)",
    )
    p.add_argument(
        "--cluster",
        action="store_true",
        help="up: start the Kafka cluster, create the topics replicated on every broker, start "
        "the Spark master and workers, and print the settings that point the job at them; "
        "down: stop them",
    )
    p.set_defaults(func=cmd_infra)
