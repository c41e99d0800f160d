"""vestige-operator: one Vestige long-term memory per AI agent, on Kubernetes."""

__version__ = "0.1.0"

GROUP = "vestige.dev"
VERSION = "v1alpha1"
KIND = "VestigeMemory"
PLURAL = "vestigememories"
SINGULAR = "vestigememory"
FIELD_MANAGER = "vestige-operator"

BACKUP_KIND = "VestigeBackup"
BACKUP_PLURAL = "vestigebackups"
BACKUP_SINGULAR = "vestigebackup"

GRANT_KIND = "VestigeBackupGrant"
GRANT_PLURAL = "vestigebackupgrants"
GRANT_SINGULAR = "vestigebackupgrant"
