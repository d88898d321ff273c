"""The DICOM node around the method: config, durable spool, study completion, routing, work queue
(Huey), analysis worker, result dispatch (persistent outbox) and status."""
