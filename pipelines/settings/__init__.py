"""Every setting of Safewatch, in one typed, frozen object.

Built once by an entry point (`Settings.load`) from, in increasing precedence: the defaults
of each section, a TOML file (`--config`, `$SAFEWATCH_CONFIG`, or `./safewatch.toml` when
present), and environment variables `SAFEWATCH_<SECTION>__<NAME>` (e.g.
`SAFEWATCH_KAFKA__BOOTSTRAP_SERVERS`). Library code receives the object; no module reads the
environment by itself. `safewatch config docs` prints the reference generated from the
sections' descriptions.

One module per group of sections (`kafka`, `stream`, `warehouse`, `alerting`, `report`), the
value types they share (`types`), the root object and its loading (`root`), and the settings
as a person reads them (`docs`).
"""

from pipelines.settings.alerting import AlertingSettings
from pipelines.settings.docs import settings_reference, settings_shown
from pipelines.settings.kafka import BrokerSettings, ClusterSettings, KafkaSettings
from pipelines.settings.report import ReportSettings
from pipelines.settings.root import Settings
from pipelines.settings.stream import (
    ContractSettings,
    DriftSettings,
    PrivacySettings,
    QualitySettings,
    SparkSettings,
    StreamSettings,
)
from pipelines.settings.warehouse import WarehouseSettings

__all__ = [
    "AlertingSettings",
    "BrokerSettings",
    "ClusterSettings",
    "ContractSettings",
    "DriftSettings",
    "KafkaSettings",
    "PrivacySettings",
    "QualitySettings",
    "ReportSettings",
    "Settings",
    "SparkSettings",
    "StreamSettings",
    "WarehouseSettings",
    "settings_reference",
    "settings_shown",
]
