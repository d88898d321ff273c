"""borderphase inside Orthanc: the Python plugin (Debian ``orthanc-python``).

Orthanc loads :mod:`.entry` (its ``PythonScript`` setting). On a stable study whose series the
routing rules send to analysis, the study is queued in the durable Huey queue; a worker thread
reads the instances through Orthanc's REST API, analyses them in a child process with
:func:`plugin.pipeline.analyze_paths`, and stores the SR, SEG, summary and KOS back into the same
study, once per study version. ``GET /borderphase/status`` lists studies and their states.

Modules: :mod:`.settings` (the ``Borderphase`` section of Orthanc's configuration and the node's
TOML schema for the rules), :mod:`.orthanc_reader` (study, series facts and instances through the
REST API), :mod:`.records` (durable per-version records), :mod:`.analysis` and
:mod:`.analyse_child` (the pipeline in a child process), :mod:`.storing` (results back into
Orthanc), :mod:`.queueing` (Huey task, consumer threads, restart reconciliation),
:mod:`.status_route` (the REST route's document). Only :mod:`.entry` imports ``orthanc``; the
others receive a small :class:`.orthanc_reader.OrthancApi` so they read like plain Python.
"""
