module github.com/agenttask-operator/agenttask-operator/images/pause

go 1.26.0
