"""Admission over HTTPS: the AdmissionReview server, request translation, serving certificates."""
