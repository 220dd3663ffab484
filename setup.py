import re
from pathlib import Path

from setuptools import find_packages, setup

here = Path(__file__).parent
requirements = [line.split('#')[0].strip() for line in (here / 'requirements.txt').read_text().splitlines()]

setup(
    name='bert_tutorial',
    version=re.search(r"__version__ = '([^']+)'", (here / 'bert_tutorial' / 'version.py').read_text())[1],
    description='The MXNet/Gluon "BERT Pre-training and Fine-tuning" tutorial as an installable package',
    long_description=(here / 'README.md').read_text(),
    long_description_content_type='text/markdown',
    license='Apache-2.0',
    packages=find_packages(include=['bert_tutorial', 'bert_tutorial.*']),
    # The C++ kernels are compiled on the user's machine at first use (bert_tutorial.speed.kernels).
    package_data={'bert_tutorial.speed.kernels': ['*.cc']},
    python_requires='>=3.11,<3.12',
    install_requires=[r for r in requirements if r],
    extras_require={
        'bench': ['scikit-learn==1.3.2'],
        # The site: python -m sphinx -W -b html docs docs/_build/html; docs/check_site.py drives Debian's chromium.
        'docs': ['sphinx>=8', 'myst-nb>=1.1', 'furo>=2024.8.6', 'sphinx-argparse>=0.5', 'selenium>=4.20'],
        'test': [
            'pytest>=7',
            'hypothesis>=6.80',
            'nbmake>=1.4',
            'nbclient>=0.7',
            'nbconvert>=7',
            'papermill>=2.4',
            'ipykernel>=6',
            'ruff>=0.4',
        ],
    },
    entry_points={'console_scripts': ['bert-tutorial=bert_tutorial.cli:main']},
)
