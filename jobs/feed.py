"""EXAMPLE jobs of the `feed` group. Replace their bodies with your application's work."""

from jobs import JobContext, job


@job(group="feed", depends_on=["matching.update_match_scores"])
def refresh_feeds(ctx: JobContext) -> None:
    """Example: rebuild each user's feed from the latest match scores."""
    ctx.log("feeds refreshed")
