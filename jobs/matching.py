"""EXAMPLE jobs of the `matching` group. Replace their bodies with your application's work."""

from jobs import JobContext, job


@job(group="matching")
def refresh_candidate_pool(ctx: JobContext) -> None:
    """Example: gather the users whose profile changed since the last run."""
    ctx.log(f"collecting candidates changed before {ctx.scheduled_for.isoformat()}")


@job(group="matching", depends_on=["matching.refresh_candidate_pool"])
def update_match_scores(ctx: JobContext) -> None:
    """Example: recompute match scores for the candidates found above."""
    ctx.log("match scores updated")
