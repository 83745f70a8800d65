"""L5 the report: reads finished run and experiment folders (readings) and writes figures
(figures), summary.md (summary) and the PDF (page, pdf, bonus). Computes nothing: never
imports training, model or backends."""
