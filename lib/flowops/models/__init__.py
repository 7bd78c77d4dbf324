"""Models on Spark ML: the uplift model that ranks subscribers by incremental conversion, with its Qini
evaluation (`uplift`); the churn model and the reusable classifier trainer will live here too."""
