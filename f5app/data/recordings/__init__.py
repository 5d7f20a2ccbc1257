"""``data=recordings``: long recordings -> clips -> transcripts -> a reviewed ``metadata.csv`` -> the
prepared set training reads. One module per step (read, segment, speakers, normalise, transcribe,
review), the review's report, the content-keyed cache, and the pipeline that runs them in order.
"""

from f5app.data.recordings.pipeline import prepare_recordings, work_dir_for

__all__ = ["prepare_recordings", "work_dir_for"]
