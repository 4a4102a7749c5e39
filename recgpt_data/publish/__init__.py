"""Publishing a built folder: the dataset card, the terms check and the upload to the Hugging Face Hub."""

from recgpt_data.publish.hub import PublishReport, publish_folder

__all__ = ["PublishReport", "publish_folder"]
