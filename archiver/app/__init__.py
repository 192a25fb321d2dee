"""The application shell: configuration, the running sink, the CLI, the local Tahoe grid."""
