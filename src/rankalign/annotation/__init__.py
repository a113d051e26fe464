"""`rankalign annotate`: people rank the k candidates of each prompt on a local web page.

    config.py     AnnotateConfig (the command's options) and their checks
    store.py      the output file: one ranked list per answered prompt, written atomically per
                  answer; several annotators merged by mean rank (Borda)
    agreement.py  Kendall's tau-b, Krippendorff's alpha (ordinal), `--agreement` report
    server.py     the Starlette app and its JSON API (validated server-side); uvicorn serves it
    stage.py      run(cfg): validate everything, then serve (or print the agreement)
    static/       the page: plain HTML, CSS and JS (text is rendered with textContent only)

It sits at the workflows level: it imports core modules (data, config, errors) and nothing
imports it but `api` and `cli`.
"""
