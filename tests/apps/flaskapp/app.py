from flask import Flask, jsonify, request

app = Flask(__name__)


@app.route("/")
def index():
    return "flask says hi"


@app.post("/items/<int:item>")
def item(item):
    return jsonify(item=item, data=request.get_json(), args=request.args.to_dict())


@app.route("/stream")
def stream():
    def gen():
        for i in range(3):
            yield f"part{i}\n"
    return app.response_class(gen(), mimetype="text/plain")
