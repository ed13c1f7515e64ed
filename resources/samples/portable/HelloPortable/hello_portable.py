"""Hello Portable: the sample portable application of the Deploy Console demo."""

from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> None:
    version = (HERE / "VERSION").read_text(encoding="utf-8").strip()
    print(f"Hello from Hello Portable {version}, unpacked by Deploy Console in {HERE}")


if __name__ == "__main__":
    main()
