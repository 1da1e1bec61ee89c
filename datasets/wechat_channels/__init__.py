"""WeChat Channels (TFDS ``wechat_channels``), see ``wechat_channels_dataset_builder``."""

from tfdebias.datasets.wechat_channels.wechat_channels_dataset_builder import Builder, WeChatConfig  # noqa: F401
