"""Jobs: the job table is the truth; the broker only carries job ids."""
