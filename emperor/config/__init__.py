"""Vassal files: uWSGI 2.0's ini dialect, read into a typed `Config`.

Every line is read the way uWSGI 2.0 reads it (docs/configuration.md says how, and
lists where emperor deliberately differs): reader.py (lines, sections, config logic,
includes, UWSGI_* variables), expand.py and resolve.py (magic variables, `$(ENV)`,
`@(file)`, `%(name)` and its arithmetic), options.py (no-ops, aliases, what else
emperor knows; the honoured options, `Config` and each option's parser are
emperor/settings.py and emperor/values.py), catalog.py (uWSGI's whole option list,
uwsgi_options.json), load.py (verdicts and the Config), check.py (`emperor check`).
"""
from __future__ import annotations

from emperor.config.load import Reading, load_config, read_vassal
from emperor.config.model import Config, ConfigError, Finding
from emperor.config.options import HOOK_ACTIONS, HOOK_PHASES, UNIX_SIGNAL_FUNCTIONS

__all__ = ["Config", "ConfigError", "Finding", "HOOK_ACTIONS", "HOOK_PHASES", "UNIX_SIGNAL_FUNCTIONS", "Reading", "load_config",
           "read_vassal"]
