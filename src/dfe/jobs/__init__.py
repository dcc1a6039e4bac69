"""The job queue: Celery dispatches job ids; job_t holds the truth about each job."""
