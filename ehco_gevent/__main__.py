from gevent import monkey

monkey.patch_all()

from ehco_gevent.cli import main  # noqa: E402

if __name__ == "__main__":
    main()
