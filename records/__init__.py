"""The patient's record: encounters, who may see what, the audit log, FHIR (docs/records.md)."""
