"""Issue 10's cases, each a test (SQLite and PostgreSQL wherever the registry is involved):

1. files outside the dataset's root: `test_data_roots.py`, `test_uploads_security.py::test_a_symlink_entry_is_refused`
2. pixel bombs and thumbnails: `test_npz_security.py::test_images_over_the_pixel_limit...`,
   `test_uploads_security.py::test_a_13000_square_png...`, `test_thumbnails.py`, `test_memory_bounds.py`,
   `tests/service/api/test_security_http.py::test_predict_limits_files_bytes_and_pixels`
3. `.npz` bombs: `test_npz_security.py`, `test_memory_bounds.py`
4. unbounded steps, cancel inside a unit: `test_jobs_security.py::test_unbounded...`, `::test_a_cancel_stops...`,
   `::test_a_unit_past_its_time_limit...`
5. database outage, failing units: `test_jobs_security.py::test_a_worker_survives...`, `::test_a_unit_whose_workers...`,
   `::test_readyz...`
6. `ZOOENS_PROTECT_READS` everywhere: `test_security_http.py::test_protect_reads...`
7. bodies refused before they are read: `test_security_http.py::test_write_without_token...`,
   `::test_too_large_is_refused...`, `::test_real_server_answers_401...`
8. one runner per job: `test_jobs_security.py::test_a_polling_worker_never_runs_the_job_a_cli_run_claimed`
9. archive bombs, entry counts, staging: `test_uploads_security.py`
10. parameters at submission: `test_jobs_security.py` (bounds, non-finite rates, `k`, zoo size and weights)
11. plain 500s: `test_uploads_security.py::test_every_malformed_zip...`, `test_npz_security.py`,
    `test_data_roots.py::test_nul_bytes...`, `test_uploads_security.py::test_file_names...`,
    `test_security_http.py::test_malformed_inputs_answer_4xx_json`
12. internals: `test_security_http.py::test_dataset_answers_carry_no_server_paths`, `::test_unexpected_errors...`,
    `::test_zoo_answers_name...`, `test_jobs_security.py::test_readyz...`, `::test_worker_ids...`
13. headers and fuzz: `test_security_http.py::test_security_headers...`, `::test_the_catalogue_is_built_once...`,
    `tests/service/api/test_fuzz.py`
14. the end-to-end test: `tests/service/api/test_e2e.py` (reports any non-200 poll); the dashboard's in-process
    worker lives only as long as its module (`tests/service/dashboard/conftest.py`)
"""
