//! `/healthz` and `/readyz`.
