"""Collections: a user's folders of projects."""
