"""What a person or a CI job reads: tables, regression gates, reports, figures, study files and HPO snippets."""
