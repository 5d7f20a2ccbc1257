# `python -m f5app.ckpt ...` runs the ckpt command line (the entry point f5app/ckpt_cli.py); nothing imports this file.
if __name__ == "__main__":
    from f5app.ckpt_cli import run; run()  # noqa: E702
